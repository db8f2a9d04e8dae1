"""What the model learned, shown: each head's attention over a prompt, the characters' embeddings, and what the
model writes at every evaluation."""
import os
import re
import shutil
import sys

import numpy as np
import pytest
import torch

import gpt
from conftest import SHAKESPEARE, TINY, TINY_GPT, edited_gpt, train

PROMPT = 'First Citizen:\nBefore we'


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return train(tmp_path_factory.mktemp('pictures'), '--max_iters=30', '--eval_interval=100', '--learning_rate=1e-2',
                 '--max_new_tokens=0')


def model_from(path, module=gpt):
    ckpt = gpt.load_checkpoint(str(path))
    c = ckpt['config']
    model = module.GPTLanguageModel(len(ckpt['chars']), c['block_size'], c['n_embd'], c['n_head'], c['n_layer'])
    model.load_state_dict(ckpt['model'])
    return model, gpt.tokenizer(ckpt['chars'])[0]


def test_the_attention_drawn_is_each_heads_wei_causal_and_summing_to_one(ckpt):
    model, encode = model_from(ckpt)
    idx = torch.tensor([encode(PROMPT[:16])])
    wei = gpt.attention_weights(model.eval(), idx)
    assert wei.shape == (2, 2, 16, 16) # (n_layer, n_head, T, T)
    assert torch.allclose(wei.sum(-1), torch.ones(2, 2, 16), atol=1e-5) # each row a softmax
    assert torch.all(wei.triu(1) == 0) # nothing read from the future
    assert torch.all(wei[:, :, 0, 0] == 1) and wei.var(-1).sum() > 0 # the first reads itself; the rest choose
    # the first block's, recomputed from its weights as part one does: wei = softmax(mask(q @ k^T * hs**-0.5))
    sa = model.blocks[0].sa
    x = model.blocks[0].ln1(model.token_embedding_table(idx) + model.position_embedding_table(torch.arange(16)))
    q, k, _ = sa.qkv(x).chunk(3, dim=-1)
    q, k = (t.view(1, 16, 2, 16).transpose(1, 2) for t in (q, k))
    scores = (q @ k.transpose(-2, -1) * 16**-0.5).masked_fill(torch.ones(16, 16).tril() == 0, float('-inf'))
    assert torch.allclose(wei[0], scores.softmax(-1)[0], atol=1e-5)


def test_a_gpt_py_without_the_mask_draws_weight_on_the_future(ckpt, tmp_path):
    unmasked = edited_gpt(tmp_path, [("        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf')) # (B, nh, T, T)\n",
                                      '')])
    model, encode = model_from(ckpt, unmasked)
    wei = unmasked.attention_weights(model.eval(), torch.tensor([encode(PROMPT[:16])]))
    assert wei.triu(1).sum(-1)[..., :-1].min() > 0.01 # every row but the last reads from positions after its own
    assert torch.allclose(wei.sum(-1), torch.ones_like(wei.sum(-1)), atol=1e-5)


class LecturesMultiHeadAttention(torch.nn.Module):
    """ the lecture's MultiHeadAttention: Heads in a list, their outputs side by side """

    def __init__(self, heads, proj):
        super().__init__()
        self.heads, self.proj, self.dropout = torch.nn.ModuleList(heads), proj, torch.nn.Dropout(0.0)

    def forward(self, x):
        return self.dropout(self.proj(torch.cat([h(x) for h in self.heads], dim=-1)))


def test_the_lectures_list_of_heads_draws_the_same_attention(ckpt):
    # a learner may go back to the lecture's class: --attention then reads what each Head hands its dropout
    model, encode = model_from(ckpt)
    idx = torch.tensor([encode(PROMPT[:16])])
    batched = gpt.attention_weights(model.eval(), idx)
    for block in model.blocks: # the same weights in Heads: qkv's rows are the queries, keys, values, head after head
        q, k, v = block.sa.qkv.weight.detach().chunk(3)
        heads = [gpt.Head(32, 16, 16, 0.0) for _ in range(2)]
        for h, head in enumerate(heads):
            for linear, w in ((head.query, q), (head.key, k), (head.value, v)):
                linear.weight.data = w[16 * h:16 * (h + 1)].clone()
        block.sa = LecturesMultiHeadAttention(heads, block.sa.proj)
    assert torch.allclose(gpt.attention_weights(model.eval(), idx), batched, atol=1e-6)


def test_an_attention_whose_dropout_is_handed_no_weights_is_refused_in_one_line(ckpt, tmp_path, capsys):
    # the dropout moved onto the values: what attn_dropout is handed is no attention, and is not drawn as one
    edited = edited_gpt(tmp_path, [('        wei = self.attn_dropout(wei)\n', ''),
                                   ('out = wei @ v #', 'out = wei @ self.attn_dropout(v) #')])
    with pytest.raises(edited.UsageError, match='^--attention finds no attention weights where it looks') as e:
        edited.main(['--sample', '--attention', f'--ckpt_path={ckpt}', f'--prompt={PROMPT}', '--device=cpu'])
    assert e.value.status == 1 and capsys.readouterr().out == ''


def test_head_stats_measures_weights_that_add_up_and_says_in_one_line_where_no_checkpoint_is(ckpt, monkeypatch,
                                                                                                capsys):
    import head_stats # the README's figures on what each head reads
    stats, share = head_stats.head_stats(str(ckpt), windows=20)
    assert stats.shape == (2, 2, 6) and 0 < share < 1
    assert (stats[..., :3].sum(-1) <= 1 + 1e-6).all() and (stats[..., :5] >= 0).all() # itself, 1 and 2 back: apart
    assert (stats[..., 5] <= np.log(16) + 1e-6).all() # no head spreads its weights wider than over all 16 positions
    monkeypatch.setattr(sys, 'argv', ['head_stats.py', str(ckpt.parent / 'none.pt')])
    with pytest.raises(SystemExit) as e:
        gpt.run_command(head_stats.main, 'head_stats.py') # as python tests/head_stats.py none.pt runs it
    assert e.value.code == 1 and capsys.readouterr().err.startswith("head_stats.py: error: no checkpoint at ")


def test_head_stats_of_a_checkpoint_trained_elsewhere_reads_this_projects_text(tmp_path):
    import head_stats # (gpt.py --resume does the same: test_a_run_whose_text_is_not_here_resumes_on_...)
    (tmp_path / 'colab').mkdir()
    shutil.copy(SHAKESPEARE, tmp_path / 'colab' / 'input.txt')
    ckpt = train(tmp_path, f'--input_path={tmp_path}/colab/input.txt', '--max_iters=1', '--max_new_tokens=0')
    shutil.rmtree(tmp_path / 'colab')
    stats, share = head_stats.head_stats(str(ckpt), windows=2)
    assert stats.shape == (2, 2, 6) and 0 < share < 1


def test_the_embedding_picture_places_each_character_by_the_tables_two_principal_components(ckpt):
    model, _ = model_from(ckpt)
    table = model.token_embedding_table.weight.detach().numpy().astype(np.float64)
    points = gpt.embedding_points(model).numpy()
    centred = table - table.mean(0)
    _, s, vt = np.linalg.svd(centred)
    expected = centred @ vt[:2].T
    signs = np.sign((points * expected).sum(0)) # a component's sign is arbitrary
    assert np.allclose(points, expected * signs, atol=1e-4)
    assert np.allclose(points.var(0, ddof=0), s[:2] ** 2 / len(table), rtol=1e-3) # the most spread of any two


def test_sample_with_attention_writes_both_pictures_and_says_where(ckpt, capsys):
    gpt.main(['--sample', '--attention', f'--ckpt_path={ckpt}', f'--prompt={PROMPT}', '--max_new_tokens=10',
              '--device=cpu'])
    out, err = capsys.readouterr()
    base = os.path.splitext(ckpt)[0]
    assert err.split() == [base + '-attention.png', base + '-embedding.png']
    for path in err.split():
        assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n' and 10_000 < os.path.getsize(path) < 300_000
    assert out.startswith(PROMPT) and len(out) == len(PROMPT) + 10 + 1 # and the sample, as without --attention
    gpt.main(['--sample', f'--ckpt_path={ckpt}', f'--prompt={PROMPT}', '--max_new_tokens=10', '--device=cpu'])
    assert capsys.readouterr().out == out


@pytest.mark.parametrize('blocked', ['gpt.csv', 'gpt-attention.png'])
def test_a_file_of_the_run_that_cannot_be_written_is_one_line(blocked, ckpt, tmp_path, monkeypatch, capsys):
    # a real failed write (a folder where the file goes), as in a read-only folder: training's history, the pictures
    (tmp_path / blocked).mkdir()
    (tmp_path / 'gpt.pt').write_bytes(ckpt.read_bytes())
    monkeypatch.setattr(sys, 'argv', ['gpt.py', *TINY_GPT, f'--input_path={TINY}', f'--ckpt_path={tmp_path}/gpt.pt',
                                      *(['--sample', '--attention', '--prompt=First'] if 'png' in blocked else [])])
    with pytest.raises(SystemExit) as e:
        gpt.run_command(gpt.main)
    assert re.fullmatch(rf"gpt.py: error: cannot write {re.escape(f'{tmp_path}/{blocked}')} \(.+\); pass "
                        "--ckpt_path= in a folder you can write to: the run's files go beside it", e.value.code)
    assert (tmp_path / 'gpt.pt').read_bytes() == ckpt.read_bytes()


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='/dev/full: Linux')
def test_output_that_cannot_be_written_is_one_line_naming_no_option(ckpt, monkeypatch):
    monkeypatch.setattr(sys, 'stdout', open('/dev/full', 'w')) # a full disk under python gpt.py --sample > out.txt
    monkeypatch.setattr(sys, 'argv', ['gpt.py', '--sample', f'--ckpt_path={ckpt}', '--max_new_tokens=5'])
    with pytest.raises(SystemExit) as e:
        gpt.run_command(gpt.main)
    assert e.value.code == 'gpt.py: error: cannot write the output (No space left on device)'


def test_the_writes_line_runs_on_cpu_0_too(tmp_path, capsys): # (a device of the CPU's, numbered)
    train(tmp_path, '--device=cpu:0', '--max_iters=2', '--eval_interval=1', '--eval_sample=5')
    assert capsys.readouterr().out.count('  writes: ') == 2


@pytest.mark.loss_picture
def test_training_draws_its_loss_curves_beside_the_checkpoint(tmp_path, capsys):
    train(tmp_path, '--max_iters=21', '--eval_interval=10', '--max_new_tokens=0')
    png = (tmp_path / 'gpt.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and 10_000 < len(png) < 200_000 # (two curves, three points each)


@pytest.mark.loss_picture
def test_without_matplotlib_attention_says_how_to_install_it_in_one_line_and_training_goes_on(ckpt, tmp_path,
                                                                                                   monkeypatch, capsys):
    for name in ('matplotlib', 'matplotlib.pyplot'): # as if not installed: importing it fails
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(sys, 'argv', ['gpt.py', '--sample', '--attention', f'--ckpt_path={ckpt}', '--prompt=First'])
    with pytest.raises(SystemExit) as e:
        gpt.run_command(gpt.main)
    assert e.value.code == 1 and capsys.readouterr() == ('', 'gpt.py: error: --attention draws with matplotlib, which '
                                                             'is not installed: pip install matplotlib\n')
    train(tmp_path, '--max_iters=2')
    assert 'trained in' in capsys.readouterr().out and not (tmp_path / 'gpt.png').exists() # no loss picture, no error


def test_attention_needs_a_prompt(ckpt, capsys):
    with pytest.raises(gpt.UsageError, match="--attention draws the attention over --prompt: give one"):
        gpt.main(['--sample', '--attention', f'--ckpt_path={ckpt}'])


def test_each_evaluation_shows_what_the_model_writes_and_the_training_is_the_same_without(tmp_path, capsys):
    train(tmp_path, '--max_iters=21', '--eval_interval=10', '--max_new_tokens=0', '--eval_sample=30')
    out = capsys.readouterr().out
    steps = re.findall(r'^step \d+: .*$', out, re.M)
    lines = re.findall(r'^step \d+: .*\n  writes: (.*)$', out, re.M)
    assert len(steps) == len(lines) == 3 and all(len(line) == 30 and '\n' not in line for line in lines)
    assert lines[0] != lines[-1] # it learns
    train(tmp_path, '--max_iters=21', '--eval_interval=10', '--max_new_tokens=0', '--eval_sample=30')
    assert re.findall(r'^  writes: (.*)$', capsys.readouterr().out, re.M) == lines # the same seed, the same lines
    train(tmp_path, '--max_iters=21', '--eval_interval=10', '--max_new_tokens=0', '--eval_sample=0')
    quiet = capsys.readouterr().out
    assert 'writes:' not in quiet and re.findall(r'^step \d+: .*$', quiet, re.M) == steps # the same losses
    train(tmp_path, '--max_iters=21', '--eval_interval=10', '--max_new_tokens=0', '--eval_sample=30', '--seed=7')
    assert re.findall(r'^  writes: (.*)$', capsys.readouterr().out, re.M)[0] != lines[0]
