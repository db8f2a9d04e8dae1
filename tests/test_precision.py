"""The precision each device trains in (--dtype), and float16's loss scaling, really run on the CPU."""
import pytest
import torch

import gpt
from conftest import train


@pytest.mark.parametrize('device, capability, n_embd, expect', [
    ('cuda', (7, 5), 384, 'float16'), # a T4 (Colab's free GPU): bf16 only emulated
    ('cuda', (7, 0), 384, 'float16'), # a V100
    ('cuda', (8, 0), 384, 'bfloat16'), # an A100
    ('cuda', (9, 0), 128, 'bfloat16'), # an H100
    ('mps', ['amx_bf16'], 384, 'float32'),
    ('cpu', ['avx512_bf16'], 384, 'bfloat16'), # the lecture's size on a CPU with bf16 instructions...
    ('cpu', ['amx_bf16', 'avx512_bf16'], 192, 'bfloat16'),
    ('cpu', ['avx512_bf16'], 128, 'float32'), # ...not the small one, no faster
    ('cpu', ['avx512f'], 384, 'float32'), # 3x slower without them
])
def test_auto_picks_the_dtype_the_device_computes_fastest(device, capability, n_embd, expect, monkeypatch):
    # no GPU here, and any CPU: only the GPU's compute capability or the CPU's flags are made up
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
    monkeypatch.setattr(gpt, 'CPU_FLAGS', ['fpu', 'sse2', *(capability if device != 'cuda' else [])])
    c = gpt.SimpleNamespace(dtype='auto', device=device, n_embd=n_embd)
    note = gpt.choose_dtype(c)
    assert c.dtype == expect
    assert note.startswith(f'dtype={expect} (auto')
    assert ('GradScaler' in note) == (expect == 'float16')


def test_bf16_on_a_gpu_without_it_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (7, 5))
    with pytest.raises(gpt.UsageError, match=r'compute capability 7.5\) only emulates bf16.*use --dtype=float16'):
        gpt.choose_dtype(gpt.SimpleNamespace(dtype='bfloat16', device='cuda'))
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (8, 6))
    c = gpt.SimpleNamespace(dtype='bfloat16', device='cuda')
    gpt.choose_dtype(c)
    assert c.dtype == 'bfloat16'


def test_float16_with_its_scaler_learns(tmp_path, capsys):
    ckpt = torch.load(train(tmp_path, '--dtype=float16', '--max_new_tokens=0', '--max_iters=150', '--eval_interval=149',
                            '--eval_iters=10'))
    vals = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines() if line.startswith('step ')]
    assert len(vals) == 2 and vals[1] < vals[0] - 0.8 # from ln(vocab), about 4, to below 3.2
    assert ckpt['scaler']['_growth_tracker'] > 0 # the scaler ran: it counts the steps since its last overflow


def test_an_overflowing_step_is_skipped_and_the_scale_survives_resume(tmp_path, capsys):
    before = torch.load(train(tmp_path, '--dtype=float16', '--max_new_tokens=0', '--max_iters=5'))
    assert before['scaler']['_growth_tracker'] > 0 # steps without an overflow, counted (5 here, unless one overflowed)
    # a scale no float16 gradient survives, put in the checkpoint: if --resume restores it, the next step overflows
    before['scaler']['scale'] = 2.0**100
    torch.save(before, tmp_path / 'gpt.pt')
    after = torch.load(train(tmp_path, '--dtype=float16', '--max_new_tokens=0', '--resume', '--max_iters=6'))
    assert after['iter'] == 6
    assert after['scaler']['scale'] == 2.0**99 and after['scaler']['_growth_tracker'] == 0 # restored, then halved
    for name, weight in before['model'].items(): # the step was skipped: nothing moved, nothing became inf or NaN
        assert torch.isfinite(after['model'][name]).all() and torch.equal(after['model'][name], weight), name
    assert after['optimizer']['state'][0]['step'] == before['optimizer']['state'][0]['step'] == 5
