"""gpt.py under torchrun (DDP over gloo on the CPU): the README's command, really run."""
import os
import re
import subprocess
import sys

import pytest
import torch

import gpt
from conftest import ROOT, TINY_GPT
from ddp_step import one_step

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason="torchrun's rendezvous needs libuv, which PyTorch's "
                                "Windows builds lack (pytorch#148283)")


def torchrun(*args, timeout=150):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


@pytest.mark.slow
def test_two_processes_train_print_each_step_once_and_stop_together_when_max_time_runs_out(tiny_text, capsys):
    # rank 0's clock decides for both: were they to stop at different steps, one would wait for the other's
    # gradients until the 10-minute timeout, and the command would not end here
    constant = ['--warmup_iters=0', '--lr_decay=none'] # the same rate at every step, whichever limit ends the run
    r = torchrun(os.path.join(ROOT, 'gpt.py'), *TINY_GPT, *constant, f'--input_path={tiny_text}',
                 f'--ckpt_path={tiny_text.parent}/gpt.pt', '--max_iters=1000000', '--eval_interval=10',
                 '--max_time=1', timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    steps = int(re.search(r'^trained in [\d.]+ s, (\d+) steps \(max_time reached\)', r.stdout, re.M).group(1))
    evaluated = [*map(str, range(0, steps - 1, 10)), str(steps - 1)] # each once, and the last step's
    assert re.findall(r'^step (\d+): train loss', r.stdout, re.M) == evaluated
    assert len(re.findall(r'M parameters$', r.stdout, re.M)) == 1
    assert 'on cpu x 2 processes' in r.stdout and 'batch_size=8 per rank, 16 in all' in r.stdout
    assert len(re.findall(r'^trained in', r.stdout, re.M)) == 1 # one checkpoint writer, one sampler
    saved = gpt.load_checkpoint(str(tiny_text.parent / 'gpt.pt'))
    assert saved['iter'] == steps and saved['optimizer']['state'][0]['step'] == steps
    model = gpt.GPTLanguageModel(len(saved['chars']), 16, 32, 2, 2)
    model.load_state_dict(saved['model']) # the model's own names, not DDP's 'module.' ones
    # one process with the same seed and batch: ranks that shared a seed, or trained without DDP's averaging,
    # would end with exactly these weights
    gpt.main([*TINY_GPT, *constant, f'--input_path={tiny_text}', f'--ckpt_path={tiny_text.parent}/one.pt',
              f'--max_iters={steps}', '--eval_interval=10'])
    alone = torch.load(tiny_text.parent / 'one.pt')['model']
    assert not all(torch.allclose(saved['model'][name], alone[name]) for name in alone)


@pytest.fixture(scope='module')
def ddp_steps(tmp_path_factory):
    """One step of two ranks on half a batch each, with SGD and with Muon (one torchrun for both)."""
    out = tmp_path_factory.mktemp('ddp') / 'ddp.pt'
    r = torchrun(os.path.join(ROOT, 'tests', 'ddp_step.py'), str(out), ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_two_ranks_on_half_batches_equal_one_process_on_the_whole(ddp_steps):
    # teardown_distributed joined the process group's threads: none is left to release its work after Python's end
    assert [open(f'{ddp_steps}.threads{rank}').read() for rank in (0, 1)] == ['0\n', '0\n']
    ddp, one = torch.load(f'{ddp_steps}.sgd'), one_step(gpt) # the whole batch in this process
    torch.manual_seed(0)
    init = gpt.GPTLanguageModel(vocab_size=13, block_size=16, n_embd=32, n_head=4, n_layer=2).state_dict()
    for name, grad in one['grads'].items(): # DDP averaged the two halves' gradients into the whole batch's
        assert torch.allclose(ddp['grads'][name], grad, rtol=1e-4, atol=1e-7), name
    for name, weight in one['weights'].items():
        assert torch.allclose(ddp['weights'][name], weight, rtol=1e-5, atol=1e-7), name
        assert not torch.equal(weight, init[name]), name # the step did move every weight


@pytest.mark.slow
def test_a_bad_override_is_reported_once_not_once_per_rank(tiny_text):
    r = torchrun(os.path.join(ROOT, 'gpt.py'), '--device=cpu', '--n_head=5', '--max_iters=1', '--eval_iters=1',
                 f'--input_path={tiny_text}', f'--ckpt_path={tiny_text.parent}/gpt.pt', timeout=60)
    assert r.returncode != 0
    assert r.stderr.count('gpt.py: error: --n_embd=') == 1, r.stderr[-3000:]


@pytest.mark.slow
def test_muon_orthogonalises_the_gradient_ddp_averaged(ddp_steps):
    # Muon's update is not linear in the gradient: two ranks agree with one process only if each rank orthogonalises
    # the average of both halves' gradients, not its own half's
    ddp, one = torch.load(f'{ddp_steps}.muon'), one_step(gpt, kind='muon')
    torch.manual_seed(0)
    init = gpt.GPTLanguageModel(vocab_size=13, block_size=16, n_embd=32, n_head=4, n_layer=2).state_dict()
    half = one_step(gpt, 0, 2, kind='muon') # one rank's half alone, orthogonalised by itself
    matrices = [name for name, w in init.items() if name.startswith('blocks.') and w.dim() == 2]
    assert len(matrices) == 8 # qkv, proj and the feed-forward's two, in each of the two blocks
    # measured against the largest update, the two ranks' update differed from one process's by up to 2e-5 (Newton-
    # Schulz in float32; in bf16, which amplifies the rounding of DDP's differently summed gradients, up to 0.037), a
    # rank's half alone by 0.73 to 1.24. 0.15 lies between, 4x or more from each, on any host whatever its rounding
    for name in matrices:
        update = one['weights'][name] - init[name]
        assert update.abs().max() > 1e-3, name # Muon moved it
        bound = 0.15 * update.abs().max()
        assert (ddp['weights'][name] - init[name] - update).abs().max() < bound, name
        assert (half['weights'][name] - init[name] - update).abs().max() > bound, name
