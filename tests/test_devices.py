"""Every path on a GPU, on a machine without one: the scripts run with --device=cuda or mps on tests/standin.py's
stand-in, which fails wherever CUDA would fail for the devices of the tensors (a CPU tensor beside a GPU one). The
numbers these paths compute are tested on the CPU by the other tests; here, that they run on the GPU at all."""
import os
import re
import sys

import pytest
import torch

import bigram
import gpt
from conftest import ROOT, TINY, train
from standin import OnMeta, gpu, mps # noqa: F401 (fixtures)

from exercises import calculator
sys.path.insert(0, os.path.join(ROOT, 'exercises'))
import muon # noqa: E402

# loading a CPU checkpoint into the stand-in's weights copies nothing (meta holds no data): it says so every time
pytestmark = pytest.mark.filterwarnings('ignore:.*copying from a non-meta parameter')
A100, T4 = (8, 0), (7, 5)


@pytest.fixture(scope='module')
def cpu_ckpt(tmp_path_factory):
    """A checkpoint written on the CPU, to be read on the GPU (trained before any stand-in exists)."""
    return train(tmp_path_factory.mktemp('cpu'), '--max_iters=3', '--max_new_tokens=0')


def on_the_device(ckpt_path):
    """Whether every weight of the checkpoint was on the (stand-in) GPU when it was saved."""
    weights = torch.load(ckpt_path)['model'].values()
    return len(weights) > 0 and all(w.is_meta for w in weights)


ON_GPU = ['--max_iters=3', '--eval_interval=2', '--max_new_tokens=3'] # two evaluations, the last step, a sample


@pytest.mark.parametrize('gpu, dtype', [(A100, 'bfloat16'), (T4, 'float16'), (A100, 'float32')], indirect=['gpu'],
                         ids=['A100 auto bf16', 'T4 auto float16', 'float32'])
def test_gpt_trains_evaluates_saves_and_samples_on_a_gpu_in_each_dtype(gpu, dtype, tmp_path, capsys):
    ckpt = train(tmp_path, '--device=cuda', *ON_GPU, '--eval_sample=5',
                 *(['--dtype=float32'] if dtype == 'float32' else []), ckpt='gpu.pt')
    out = capsys.readouterr().out
    assert f'dtype={dtype}' in out and 'step 2: train loss' in out and 'val loss on the whole val split' in out
    assert out.count('  writes: ') == 2 # what the model writes at each evaluation, drawn on the GPU too
    assert on_the_device(ckpt)


@pytest.mark.parametrize('gpu', [T4], indirect=True) # float16: its loss scale restored too
def test_resume_and_sample_read_a_cpu_checkpoint_on_a_gpu(cpu_ckpt, gpu, tmp_path, capsys):
    (tmp_path / 'gpu.pt').write_bytes(cpu_ckpt.read_bytes())
    ckpt = train(tmp_path, '--device=cuda', *ON_GPU, '--resume', '--max_iters=5', ckpt='gpu.pt')
    assert torch.load(ckpt)['iter'] == 5 and on_the_device(ckpt)
    capsys.readouterr()
    gpt.main(['--sample', '--device=cuda', f'--ckpt_path={cpu_ckpt}', '--max_new_tokens=7', '--prompt=ROMEO'])
    assert len(capsys.readouterr().out) == len('ROMEO') + 7 + 1 # (the characters the stand-in's zeros decode to)


def test_init_from_starts_a_gpu_run_from_a_cpu_checkpoint(cpu_ckpt, gpu, tmp_path, capsys):
    ckpt = train(tmp_path, '--device=cuda', *ON_GPU, f'--init_from={cpu_ckpt}', ckpt='gpu.pt')
    assert f'weights from {cpu_ckpt}' in capsys.readouterr().out and on_the_device(ckpt)


def test_attention_pictures_from_a_gpu(cpu_ckpt, gpu, tmp_path, capsys):
    (tmp_path / 'gpu.pt').write_bytes(cpu_ckpt.read_bytes())
    gpt.main(['--sample', '--attention', '--device=cuda', f'--ckpt_path={tmp_path}/gpu.pt', '--prompt=First',
              '--max_new_tokens=2'])
    assert capsys.readouterr().err.split() == [f'{tmp_path}/gpu-attention.png', f'{tmp_path}/gpu-embedding.png']
    assert (tmp_path / 'gpu-attention.png').exists() and (tmp_path / 'gpu-embedding.png').exists()


@pytest.mark.parametrize('gpu', [T4], indirect=True)
def test_a_batch_too_big_for_the_gpu_stops_in_one_line_that_says_what_to_lower(gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(OnMeta, 'memory', 2**20) # a GPU that holds no tensor over 1 MiB: the logits of 1024 x 16
    with pytest.raises(gpt.UsageError, match='^out of memory on cuda at --batch_size=1024: lower it or --block_size$') as e:
        train(tmp_path, '--device=cuda', *ON_GPU, '--batch_size=1024', ckpt='gpu.pt')
    assert e.value.status == 1


def test_bench_on_a_gpu(gpu, tmp_path, capsys):
    train(tmp_path, '--device=cuda', '--bench', '--bench_iters=2', ckpt='gpu.pt')
    assert 'ms/iter' in capsys.readouterr().out and not (tmp_path / 'gpu.pt').exists()


def test_bigram_trains_and_samples_on_a_gpu(gpu, capsys):
    bigram.main([f'--input_path={TINY}', '--device=cuda', '--max_iters=3', '--eval_iters=2', '--max_new_tokens=5'])
    assert 'step 2: train loss' in capsys.readouterr().out


@pytest.mark.parametrize('gpu, ns_dtype', [(A100, torch.bfloat16), (T4, torch.float32)], indirect=['gpu'],
                         ids=['A100', 'T4'])
def test_muon_trains_on_a_gpu_in_bf16_only_where_the_gpu_has_it(gpu, ns_dtype, tmp_path, capsys):
    model = gpt.GPTLanguageModel(20, 16, 32, 2, 2).to('cuda')
    assert muon.configure_optimizer(model, 1e-3, 0.1, 0.99).optimizers['muon'].ns_dtype == ns_dtype
    if ns_dtype == torch.bfloat16: # (a run on one of them is enough)
        train(tmp_path, '--device=cuda', '--max_iters=3', '--eval_interval=2', script=muon, ckpt='muon.pt')
        assert on_the_device(tmp_path / 'muon.pt')


@pytest.fixture(scope='module')
def cpu_calculator(tmp_path_factory):
    path = tmp_path_factory.mktemp('calc') / 'calc.pt'
    calculator.main(['--n_digits=2', '--n_layer=1', '--n_embd=16', '--batch_size=16', '--max_iters=2',
                     '--max_time=0', '--eval_problems=8', '--device=cpu', f'--ckpt_path={path}'])
    return path


def test_the_calculator_trains_evaluates_and_answers_on_a_gpu(cpu_calculator, gpu, tmp_path, capsys):
    calculator.main(['--n_digits=2', '--n_layer=1', '--n_embd=16', '--batch_size=16', '--max_iters=3',
                     '--eval_interval=2', '--max_time=0', '--eval_problems=8', '--device=cuda',
                     f'--ckpt_path={tmp_path}/calc.pt'])
    out = capsys.readouterr().out
    assert all(f'a{o}b: ' in out for o in '+-*/') and on_the_device(tmp_path / 'calc.pt')
    calculator.main(['--ask=12*34', '--device=cuda', f'--ckpt_path={cpu_calculator}'])
    assert capsys.readouterr().out.startswith('12*34 = ')


def test_gpt_trains_and_samples_on_mps_in_float32(mps, tmp_path, capsys):
    ckpt = train(tmp_path, '--device=mps', *ON_GPU, '--eval_sample=5', ckpt='gpu.pt') # (the writes line: fork_rng)
    out = capsys.readouterr().out
    assert 'dtype=float32' in out and out.count('  writes: ') == 2 and on_the_device(ckpt)


def test_the_final_sample_runs_the_code_sample_runs_at_its_precision(cpu_ckpt, gpu, tmp_path, capsys):
    # on a GPU, part two's fused attention and TF32 matmuls draw another text than part one's code in float32
    seen = []
    record = lambda module, args, out: seen.append((type(module).__name__, torch.get_float32_matmul_precision()))
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        gpt.main(['--sample', '--device=cuda', f'--ckpt_path={cpu_ckpt}', '--max_new_tokens=4'])
        sample, seen[:] = list(seen), []
        train(tmp_path, '--device=cuda', *ON_GPU, '--max_new_tokens=4', ckpt='gpu.pt')
    finally:
        hook.remove()
    assert ('MultiHeadAttention', 'highest') in sample and seen[-len(sample):] == sample


@pytest.mark.parametrize('script', [gpt, bigram], ids=['gpt.py', 'bigram.py'])
@pytest.mark.parametrize('device, words', [
    ('cuda:1', '--device=cuda:1 is not on this machine; use --device=cuda'),
    ('mps:0', '--device=mps:0 is not on this machine; use --device=cpu'),
    ('cuda:first', "--device='cuda:first' must be 'cuda', 'cuda:N', 'mps' or 'cpu'"),
])
def test_a_device_this_machine_lacks_is_refused_in_one_line(script, device, words, gpu, capsys):
    with pytest.raises(script.UsageError, match=f'^{re.escape(words)}$'):
        script.main([f'--device={device}', f'--input_path={TINY}', '--max_iters=1'])
    assert capsys.readouterr().out == ''


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_half_precision_on_mps_is_refused_in_one_line(dtype, mps, tmp_path, capsys):
    # autocast has no 'mps' in torch 2.4, float16's GradScaler fails there until about 2.8, bf16 turns itself off in 2.5
    with pytest.raises(gpt.UsageError, match=f'--dtype={dtype} on MPS: .*; use --dtype=float32'):
        train(tmp_path, '--device=mps', *ON_GPU, f'--dtype={dtype}', ckpt='gpu.pt')
    assert capsys.readouterr().out == '' and not (tmp_path / 'gpu.pt').exists()


def test_torchrun_on_mps_is_refused_in_one_line(mps, tmp_path, monkeypatch, capsys):
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='1').items():
        monkeypatch.setenv(name, value)
    with pytest.raises(gpt.UsageError, match='torchrun on MPS: gloo, its only backend there, cannot carry MPS tensors'):
        train(tmp_path, '--device=mps', *ON_GPU, ckpt='gpu.pt')
    assert not (tmp_path / 'gpu.pt').exists()


@pytest.mark.parametrize('nccl', [True, False], ids=['Linux', 'Windows, no NCCL'])
def test_torchrun_on_cuda_takes_nccl_where_this_torch_has_it_else_gloo(nccl, gpu, tmp_path, monkeypatch):
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='1').items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.distributed, 'is_nccl_available', lambda: nccl)
    backends = []
    def init_process_group(backend, *args, **kwargs): # (NCCL needs a GPU: the backend asked for is the claim)
        backends.append(backend)
        raise KeyboardInterrupt
    monkeypatch.setattr(torch.distributed, 'init_process_group', init_process_group)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, '--device=cuda', *ON_GPU, ckpt='gpu.pt')
    assert backends == ['nccl' if nccl else 'gloo']


def test_an_nvidia_gpu_that_this_torch_cannot_use_is_named_with_the_fix(tmp_path, monkeypatch, capsys):
    # pip's torch on Windows has no CUDA: the GPU would sit idle, and nothing would say so
    for folder in 'bin', 'none': # (no folder of the machine's own: it may have a GPU, and this test must pass there)
        (tmp_path / folder).mkdir()
    smi = tmp_path / 'bin' / ('nvidia-smi.exe' if os.name == 'nt' else 'nvidia-smi') # found, not run
    smi.write_text('#!/bin/sh\necho "NVIDIA-SMI 580.00"\n')
    smi.chmod(0o755)
    monkeypatch.setattr(torch.version, 'cuda', None) # a torch without CUDA (the CPU build here has none anyway)
    hint = ('  an NVIDIA GPU is here, but this torch has no CUDA: pip uninstall torch, then pip install torch '
            "--index-url https://download.pytorch.org/whl/cu126 (or your driver's: pytorch.org/get-started)")
    for folder, shown in (('none', False), ('bin', True)):
        monkeypatch.setenv('PATH', str(tmp_path / folder))
        train(tmp_path, '--max_iters=1')
        assert (hint in capsys.readouterr().out) == shown
