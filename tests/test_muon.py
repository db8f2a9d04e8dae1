"""exercises/muon.py: Muon for the blocks' matrices, AdamW for the rest, in every part of a gpt.py run."""
import os
import re
import sys

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import gpt
from conftest import ROOT, TINY, TINY_GPT, train

sys.path.insert(0, os.path.join(ROOT, 'exercises'))
import muon as ex4 # (not 'muon': the name of the optimizer in these tests)


def test_muon_takes_the_blocks_matrices_and_adamw_everything_else():
    model = gpt.GPTLanguageModel(vocab_size=20, block_size=16, n_embd=32, n_head=4, n_layer=3)
    optimizer = ex4.configure_optimizer(model, 1e-3, 0.1, 0.99)
    (muon,) = optimizer.optimizers['muon'].param_groups
    decay, no_decay = optimizer.optimizers['adamw'].param_groups
    held = [id(p) for g in (muon, decay, no_decay) for p in g['params']]
    assert sorted(held) == sorted(id(p) for p in model.parameters()) # every parameter, in exactly one group
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in muon['params']) == sorted(
        f'blocks.{i}.{m}.weight' for i in range(3) for m in ('sa.qkv', 'sa.proj', 'ffwd.net.0', 'ffwd.net.2'))
    # AdamW keeps the lookups and the read-out (decayed, as before) and the vectors (not decayed)
    assert sorted(names[id(p)] for p in decay['params']) == [
        'lm_head.weight', 'position_embedding_table.weight', 'token_embedding_table.weight']
    assert all(p.dim() == 1 for p in no_decay['params'])
    assert muon['lr'] == 2e-3 and muon['lr_scale'] == 2 # twice AdamW's: the best ratio measured on a CPU
    # decoupled decay shrinks a matrix by lr * weight_decay a step: Muon's at its own rate, twice AdamW's
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    shrink = {n: (p / before[n]).mean().item() for n, p in model.named_parameters() if p.dim() == 2}
    assert shrink['blocks.0.sa.qkv.weight'] == pytest.approx(1 - 2e-3 * 0.1, abs=1e-6)
    assert shrink['lm_head.weight'] == pytest.approx(1 - 1e-3 * 0.1, abs=1e-6)
    # gpt.py's own is the lecture's AdamW alone, over every parameter
    adamw = gpt.configure_optimizer(model, 1e-3, 0.1, 0.99)
    assert type(adamw) is torch.optim.AdamW and sum(len(g['params']) for g in adamw.param_groups) == len(held)


def test_a_tiny_muon_run_lowers_the_loss_on_its_own_schedule(tmp_path, capsys):
    rates = []
    def record(optimizer, args, kwargs):
        rates.append((type(optimizer).__name__, [g['lr'] for g in optimizer.param_groups]))
    handle = register_optimizer_step_pre_hook(record)
    try:
        train(tmp_path, '--learning_rate=2e-3', '--warmup_iters=5', '--lr_decay=linear', '--max_iters=80',
              '--eval_interval=40', '--max_new_tokens=0', script=ex4)
    finally:
        handle.remove()
    assert "optimizer: Muon at 2x AdamW's rate for the blocks' matrices, AdamW for the rest" in capsys.readouterr().out
    history = [line.split(',') for line in (tmp_path / 'gpt.csv').read_text().splitlines()[1:]]
    assert float(history[-1][2]) < float(history[0][2]) - 0.5 # val loss, from ln(vocab) down
    c = gpt.SimpleNamespace(learning_rate=2e-3, warmup_iters=5, lr_decay='linear', min_lr=0.0, max_iters=80)
    adamw = [lrs for name, lrs in rates if name == 'AdamW']
    muon = [lrs for name, lrs in rates if name == 'Muon']
    assert len(adamw) == len(muon) == 80 # both stepped at every step...
    for it in range(80): # ...on the one schedule, each from its own base rate
        assert adamw[it] == [gpt.get_lr(it, c)] * 2 and muon[it] == [pytest.approx(2 * gpt.get_lr(it, c))]
    saved = gpt.load_checkpoint(str(tmp_path / 'gpt.pt'))
    assert len(saved['optimizer']['muon']['state']) == 8 # a momentum for each matrix of the two blocks
    assert saved['optimizer']['adamw']['state'][0]['step'] == 80


def steps(model, optimizer, batches):
    for x, y in batches:
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def test_a_muon_checkpoint_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    batches = [(torch.randint(20, (4, 16)), torch.randint(20, (4, 16))) for _ in range(6)]
    def fresh():
        model = gpt.GPTLanguageModel(20, 16, 32, 2, 2)
        return model, ex4.configure_optimizer(model, 1e-2, 0.1, 0.99)
    model, optimizer = fresh()
    steps(model, optimizer, batches[:3])
    cfg = dict(gpt.HYPERPARAMETERS, block_size=16, n_embd=32, n_head=2, n_layer=2)
    gpt.save_atomically(str(tmp_path / 'm.pt'), {'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                        'config': cfg, 'chars': [chr(97 + i) for i in range(20)], 'iter': 3, 'best_val_loss': 9.0})
    steps(model, optimizer, batches[3:]) # uninterrupted
    saved = gpt.load_checkpoint(str(tmp_path / 'm.pt'))
    for with_state in (True, False):
        resumed, resumed_optimizer = fresh()
        resumed.load_state_dict(saved['model'])
        if with_state:
            resumed_optimizer.load_state_dict(saved['optimizer'])
        steps(resumed, resumed_optimizer, batches[3:])
        same = all(torch.equal(resumed.state_dict()[n], w) for n, w in model.state_dict().items())
        assert same == with_state # exactly the same weights; without the momentum they would differ


def test_resume_keeps_the_optimizer_and_gpt_py_refuses_it(tmp_path, capsys):
    args = [*TINY_GPT, f'--input_path={TINY}', f'--ckpt_path={tmp_path}/gpt.pt', '--max_new_tokens=0']
    ex4.main([*args, '--max_iters=10'])
    ex4.main([*args, '--resume', '--max_iters=15'])
    saved = gpt.load_checkpoint(str(tmp_path / 'gpt.pt'))
    assert saved['optimizer']['adamw']['state'][0]['step'] == 15 and len(saved['optimizer']['muon']['state']) == 8
    before = (tmp_path / 'gpt.pt').read_bytes()
    with pytest.raises(gpt.UsageError, match=r"holds another optimizer's state \(gpt.py's, or exercises/muon.py's\): resume it with the script"):
        gpt.main([*args, '--resume', '--max_iters=20'])
    assert (tmp_path / 'gpt.pt').read_bytes() == before
    capsys.readouterr()
    gpt.main(['--sample', f'--ckpt_path={tmp_path}/gpt.pt', '--max_new_tokens=5', '--device=cpu']) # gpt.py's model
    assert len(capsys.readouterr().out) == 1 + 5 + 1


@pytest.mark.skipif(not hasattr(torch.optim, 'Muon'), reason='torch.optim.Muon is new in PyTorch 2.9')
def test_in_bf16_muon_is_torch_optim_muon_to_the_bit():
    torch.manual_seed(0)
    mine = [torch.nn.Parameter(torch.randn(shape)) for shape in ((48, 16), (16, 16), (16, 64))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    optimizers = (ex4.Muon(mine, lr=0.02, weight_decay=0.1, ns_dtype=torch.bfloat16),
                  torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, adjust_lr_fn='match_rms_adamw'))
    for _ in range(3): # the momentum and the decay included
        grads = [torch.randn_like(p) for p in mine]
        for params, optimizer in zip((mine, theirs), optimizers):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


def test_newton_schulz_makes_a_gradient_about_orthogonal_in_float32_and_bf16():
    torch.manual_seed(0)
    G = torch.randn(128, 32) @ torch.diag(torch.logspace(-2, 0, 32)) # directions of 100-fold different sizes
    singular = torch.linalg.svdvals(G)
    assert singular.max() / singular.min() > 100
    for dtype in (torch.float32, torch.bfloat16):
        U = ex4.newton_schulz(G, dtype)
        assert U.shape == G.shape and U.dtype == dtype
        # every direction moved by about as much: singular values near 1 (0.7 to 1.2 is the quintic's design)
        singular = torch.linalg.svdvals(U.float())
        assert singular.min() > 0.5 and singular.max() < 1.5, (dtype, singular)


def test_newton_schulz_runs_in_float32_on_a_cpu():
    model = gpt.GPTLanguageModel(vocab_size=20, block_size=16, n_embd=32, n_head=4, n_layer=1)
    assert ex4.configure_optimizer(model, 1e-3, 0.1, 0.99).optimizers['muon'].ns_dtype == torch.float32


def test_bench_and_the_time_budget_run_muon_too(tmp_path, clock, capsys):
    stepped = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: stepped.append((type(optimizer).__name__, optimizer.param_groups[0]['lr'])))
    try:
        train(tmp_path, '--bench', '--bench_iters=3', script=ex4, ckpt='bench.pt')
        assert [name for name, _ in stepped].count('Muon') == 2 + 3 # the warm-up steps and the timed ones
        assert re.search(r'^bench: \d+\.\d ms/iter', capsys.readouterr().out, re.M)
        del stepped[:]
        train(tmp_path, '--max_time=2', '--max_iters=1000000', '--eval_interval=1000000', '--lr_decay=linear',
              '--warmup_iters=2', '--max_new_tokens=0', script=ex4) # (on the test's clock, a step takes 0.1 s)
    finally:
        handle.remove()
    assert '(max_time reached)' in capsys.readouterr().out
    muon = [lr for name, lr in stepped if name == 'Muon']
    assert muon[-1] == 0.0 and max(muon) > 0 # decayed to min_lr where the budget ran out (however many steps fit)


def test_resume_takes_the_rates_and_decay_given_now(tmp_path, capsys):
    args = [*TINY_GPT, f'--input_path={TINY}', f'--ckpt_path={tmp_path}/gpt.pt', '--max_new_tokens=0']
    ex4.main([*args, '--learning_rate=2e-3', '--max_iters=5'])
    rates = []
    handle = register_optimizer_step_pre_hook(lambda optimizer, a, k: rates.append(
        (type(optimizer).__name__, [(g['lr'], g['weight_decay']) for g in optimizer.param_groups])))
    try: # a finetune: other rates and decay than the checkpoint's; loading its state must not bring back the old ones
        ex4.main([*args, '--resume', '--max_iters=8', '--learning_rate=1e-3', '--weight_decay=0.2',
                  '--lr_decay=none', '--warmup_iters=0'])
    finally:
        handle.remove()
    muon = [(2e-3, 0.2)]
    assert ('Muon', muon) in rates and ('AdamW', [(1e-3, 0.2), (1e-3, 0.0)]) in rates
    assert all(lrs in (muon, [(1e-3, 0.2), (1e-3, 0.0)]) for _, lrs in rates)
