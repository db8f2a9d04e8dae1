"""A stand-in GPU for a machine without one: the scripts run with --device=cuda (or mps), and every tensor they put
there lives on torch's 'meta' device instead, under CUDA's rules for mixing devices. Meta tensors have shapes and no
data: what a script reads back from one (loss.item(), a sample's tolist(), wei.cpu()) reads zeros. So a path that
would fail on a GPU for its devices fails here; its numbers are tested on the CPU."""
import functools
import math
import re
import sys

import pytest
import torch
from torch.optim import optimizer as optim # (torch.optim.optimizer: deleted from torch.optim's names)
from torch.overrides import TorchFunctionMode, resolve_name

# calls that move data between devices, as they may
CROSSING = {torch.Tensor.copy_, torch.Tensor.to, torch._has_compatible_shallow_copy_type}
# calls that read a tensor's values into Python or onto the CPU
READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
         torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu}


class OnMeta(TorchFunctionMode):
    """The device named kind ('cuda' or 'mps') becomes 'meta' wherever a device is named, and an operation that
    mixes a meta tensor with a CPU tensor of one or more dimensions fails, as on CUDA; a 0-dim CPU tensor is a
    number, and an index on the CPU is moved, as CUDA does."""

    memory = math.inf # bytes a tensor may take: a test gives fewer, and a bigger one is out of memory, as on CUDA

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def device(self, x):
        named = isinstance(x, torch.device) and x.type == self.kind or \
            isinstance(x, str) and re.fullmatch(rf'{self.kind}(:\d+)?', x)
        return torch.device('meta') if named else x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func == torch.Tensor.device.__get__ and args[0].is_meta: # where the script put it
            return torch.device(self.kind, 0) if self.kind == 'cuda' else torch.device(self.kind)
        if func == torch.Tensor.is_cuda.__get__ and args[0].is_meta:
            return self.kind == 'cuda'
        if func is torch.device: # a name, not a place: torch's own code asks torch.device('cuda').type
            return func(*args, **(kwargs or {}))
        args, kwargs = tuple(map(self.device, args)), {k: self.device(v) for k, v in (kwargs or {}).items()}
        tensors = [t for a in (*args, *kwargs.values()) for t in (a if isinstance(a, (list, tuple)) else (a,))
                   if isinstance(t, torch.Tensor)] # (lists of tensors: torch.cat's, the optimizers' foreach)
        if any(t.is_meta for t in tensors):
            to_cpu = func is torch.Tensor.to and any(a in ('cpu', torch.device('cpu')) for a in (*args[1:], *kwargs.values()))
            if (func in READS or to_cpu) and args[0].is_meta: # no data: zeros
                return func(torch.zeros(args[0].shape, dtype=args[0].dtype), *args[1:], **kwargs)
            if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__): # only a value assigned counts
                tensors = args[2:] if func is torch.Tensor.__setitem__ else []
            elif func in CROSSING or getattr(func, '__name__', '') == '__set__': # (.data = ...)
                tensors = []
            if any(isinstance(t, torch.Tensor) and t.device.type == 'cpu' and t.dim() > 0 for t in tensors):
                raise RuntimeError(f"{resolve_name(func) or func}: Expected all tensors to be on the same device, but "
                                   "found at least two devices, cuda:0 and cpu! (the stand-in GPU)")
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_meta and out.nbytes > self.memory:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {out.nbytes} bytes (the stand-in "
                                              f"GPU holds {self.memory})")
        return out


@pytest.fixture(params=[(8, 0)], ids=lambda capability: f'cuda {capability[0]}.{capability[1]}')
def gpu(request, monkeypatch):
    """A CUDA GPU of the compute capability given as the fixture's param (an A100's by default; (7, 5), a T4's),
    standing in for one: torch.cuda answers as it would, tensors on 'cuda' live on 'meta'."""
    major, minor = request.param
    cuda = torch.cuda
    for name, value in dict(is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
                            get_device_capability=lambda device=None: (major, minor),
                            is_bf16_supported=lambda including_emulation=True: major >= 8 or including_emulation,
                            synchronize=lambda device=None: None, set_device=lambda device: None,
                            get_rng_state=lambda device='cuda': torch.zeros(16, dtype=torch.uint8),
                            set_rng_state=lambda state, device='cuda': None,
                            is_current_stream_capturing=lambda: False).items(): # (asked by the optimizers' step)
        monkeypatch.setattr(cuda, name, value)
    # a CUDA machine has no MPS (on a Mac, a test's --device=mps:0 would otherwise find one)
    unavailable = functools.wraps(torch.backends.mps.is_available)(lambda: False) # (torch._dynamo reads __wrapped__)
    monkeypatch.setattr(torch.backends.mps, 'is_available', unavailable)
    if hasattr(torch, 'accelerator'): # the optimizers' step asks it from torch 2.8 on
        monkeypatch.setattr(torch.accelerator, 'current_stream', lambda device=None: FakeStream())
    standing_in(monkeypatch, 'cuda')
    with OnMeta('cuda'):
        yield 'cuda'


class FakeStream:
    def is_capturing(self):
        return False


def standing_in(monkeypatch, kind):
    """What both stand-ins need: fused AdamW on meta where this torch has it for the device; torch.save of meta tensors
    as meta (not as 'cuda'); and on a CUDA build of torch, nothing that reaches the real CUDA runtime."""
    supported = optim._get_fused_kernels_supported_devices # (imported by name into several modules: each patched)
    on_meta = torch._C._dispatch_has_kernel_for_dispatch_key('aten::_fused_adamw_', 'Meta') # (not in torch 2.4:
    stand_in = lambda: supported() + ['meta'] if kind in supported() and on_meta else [ # there, AdamW unfused)
        d for d in supported() if d != kind]
    for module in [m for name, m in sys.modules.items() if name.startswith(('torch.optim', 'torch.utils._foreach'))]:
        if getattr(module, '_get_fused_kernels_supported_devices', None) is supported:
            monkeypatch.setattr(module, '_get_fused_kernels_supported_devices', stand_in)
    def real_cuda(*args, **kwargs):
        raise AssertionError("the stand-in GPU reached the real CUDA runtime")
    monkeypatch.setattr(torch.cuda, '_lazy_init', real_cuda)
    save = torch.save
    def save_as_meta(*args, **kwargs):
        with torch._C.DisableTorchFunction():
            return save(*args, **kwargs)
    monkeypatch.setattr(torch, 'save', save_as_meta)


@pytest.fixture
def mps(monkeypatch):
    """Apple silicon's GPU, standing in the same way."""
    available = functools.wraps(torch.backends.mps.is_available)(lambda: True) # (torch._dynamo reads __wrapped__)
    monkeypatch.setattr(torch.backends.mps, 'is_available', available)
    monkeypatch.setattr(torch.mps, 'synchronize', lambda: None)
    monkeypatch.setattr(torch.mps, 'get_rng_state', lambda device='mps': torch.zeros(16, dtype=torch.uint8))
    monkeypatch.setattr(torch.mps, 'set_rng_state', lambda state, device='mps': None)
    standing_in(monkeypatch, 'mps')
    with OnMeta('mps'):
        yield 'mps'
