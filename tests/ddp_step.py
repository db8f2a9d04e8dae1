"""One optimizer step under torchrun: each rank takes its half of a fixed batch (used by test_ddp.py)."""
import sys

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, sys.argv[2])
import gpt

rank, local_rank, world_size = gpt.setup_distributed()
torch.manual_seed(0) # the same initial weights and batch on every rank
model = gpt.GPTLanguageModel(vocab_size=13, block_size=16, n_embd=32, n_head=4, n_layer=2)
x, y = torch.randint(13, (8, 16)), torch.randint(13, (8, 16))
# plain SGD: AdamW's first step is about lr * sign(grad), which turns rounding noise in near-zero gradients into
# differences of lr; SGD moves each weight by exactly what DDP averaged
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
ddp = DDP(model) if world_size > 1 else model
half = 8 // world_size
_, loss = ddp(x[rank*half:(rank+1)*half], y[rank*half:(rank+1)*half])
loss.backward()
optimizer.step()
if rank == 0:
    torch.save({'weights': model.state_dict(), 'grads': {n: p.grad for n, p in model.named_parameters()}}, sys.argv[1])
if world_size > 1:
    torch.distributed.destroy_process_group()
