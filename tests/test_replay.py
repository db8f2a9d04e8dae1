"""The lecture's numbers, stage by stage: our code, built up as the video builds it, reaches each of them."""
import pytest


@pytest.mark.slow
def test_every_stage_reaches_the_lecture_s_number(replayed):
    results, _ = replayed
    reported = [r for r in results if r['lecture'] is not None]
    assert len(reported) == 7
    for r in reported: # within 0.05 of it, or below
        assert r['val'] <= r['lecture'] + 0.05, r
        assert r['whole_val'] <= r['lecture'] + 0.05, r


@pytest.mark.slow
def test_every_stage_improves_on_the_one_before(replayed):
    results, _ = replayed
    # as the lecture tells it: each step it takes lowers the val loss (the stages it reports a number for)
    chain = [r for r in results if r['lecture'] is not None and r['stage'] != 'multi-head, C**-0.5']
    assert [r['stage'] for r in chain] == ['bigram', 'one head', 'multi-head', 'feed-forward', 'residual blocks',
                                          'layernorm']
    for before, after in zip(chain, chain[1:]):
        assert after['val'] < before['val'], (before, after)


@pytest.mark.slow
def test_the_table_shows_every_stage_and_the_scaled_up_one(replayed):
    results, printed = replayed
    for r in results:
        assert f"| {r['stage']} | {r['chapter']} |" in printed and f"{r['val']:.4f}" in printed
    assert '| scaled up |' in printed


def test_the_stages_are_the_lecture_s_models():
    import torch.nn as nn
    import replay
    params = {s[0]: sum(p.numel() for p in replay.build(s[0], 65).parameters()) for s in replay.STAGES}
    # the lecture's residual stage: 3 blocks of 4 heads, a projection after the heads, the feed-forward 4x wide
    assert params['layernorm'] - params['residual blocks'] == 3 * 2 * 2 * 32 + 2 * 32
    assert params['multi-head'] == params['one head'] == params['multi-head, C**-0.5'] # 4 heads of 8 = one of 32
    assert params['feed-forward'] - params['multi-head'] == 32 * 32 + 32
    assert params['bigram'] == 65 * 65
    model = replay.build('residual blocks', 65)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())


def test_the_multi_head_stage_scales_as_the_lecture_did_before_its_correction():
    import torch
    import replay
    torch.manual_seed(0)
    model = replay.build('multi-head, C**-0.5', 65)
    heads = model.blocks[0]
    x = torch.randn(2, 8, 32)
    q, k, v = heads.qkv.weight.split(32) # the lecture's Head, one head of 8 at a time, scores times C**-0.5
    outs = []
    for h in range(4):
        qh, kh, vh = (x @ w[8*h:8*h+8].T for w in (q, k, v))
        wei = (qh @ kh.transpose(-2, -1) * 32**-0.5).masked_fill(torch.ones(8, 8).tril() == 0, float('-inf'))
        outs.append(wei.softmax(-1) @ vh)
    assert torch.allclose(heads(x), torch.cat(outs, dim=-1), atol=1e-6)
    corrected = replay.build('multi-head', 65).blocks[0]
    corrected.load_state_dict(heads.state_dict())
    assert not torch.allclose(corrected(x), heads(x), atol=1e-3) # and the corrected stage does not


def test_the_bigram_stage_reaches_the_lecture_s_number_and_the_replay_is_deterministic():
    # the first stage, the one of seconds, in every run of the tests (the others: the slow ones above)
    import torch
    import replay
    threads = torch.get_num_threads()
    try:
        bigram = replay.train_stage(replay.STAGES[0])
        short = (*replay.STAGES[0][:-1], 100) # 100 of its steps, twice: the same numbers
        first, again = replay.train_stage(short), replay.train_stage(short)
    finally:
        torch.set_num_threads(threads)
    assert bigram['val'] <= bigram['lecture'] + 0.05 and bigram['whole_val'] <= bigram['lecture'] + 0.05, bigram
    assert (first['val'], first['whole_val']) == (again['val'], again['whole_val'])


@pytest.mark.slow
def test_the_scaled_up_row_is_gpt_py_s_own_run(tmp_path):
    # on a GPU the last row runs gpt.py --config=lecture; here the same path with a model small enough for a CPU
    import replay
    val, whole, params, seconds = replay.scaled_up(
        '--device=cpu', '--max_iters=3', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16',
        '--batch_size=4', '--eval_iters=20', device='cpu')
    assert params == 2 * 65 * 32 + 65 + 16 * 32 + 12 * 32 * 32 + 12 * 32 # one block of n_embd 32, vocabulary 65
    # three steps from the init: both the run's last estimate and the whole split are still near ln(65) = 4.17
    assert abs(val - 4.17) < 0.1 and abs(whole - val) < 0.05 and seconds > 0
