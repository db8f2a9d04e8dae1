"""One optimizer step where each rank takes its share of a fixed batch, with SGD and with Muon (used by test_ddp.py,
under torchrun): python -m torch.distributed.run ... ddp_step.py OUT ROOT writes OUT.sgd and OUT.muon."""
import os
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP


def one_step(gpt, rank=0, world_size=1, kind='sgd'):
    torch.manual_seed(0) # the same initial weights and batch on every rank
    model = gpt.GPTLanguageModel(vocab_size=13, block_size=16, n_embd=32, n_head=4, n_layer=2)
    x, y = torch.randint(13, (8, 16)), torch.randint(13, (8, 16))
    # plain SGD: AdamW's first step is about lr * sign(grad), which turns rounding noise in near-zero gradients into
    # differences of lr; SGD moves each weight by exactly what DDP averaged
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    if kind == 'muon': # exercises/muon.py's Muon, alone (its AdamW part would have AdamW's first-step noise)
        sys.path.insert(0, os.path.join(os.path.dirname(gpt.__file__), 'exercises'))
        import muon
        optimizer = muon.configure_optimizer(model, 0.01, 0.0, 0.99).optimizers['muon'] # at 2x: 0.02
    ddp = DDP(model) if torch.distributed.is_initialized() else model # outside torchrun: a rank's share alone
    share = 8 // world_size
    _, loss = ddp(x[rank*share:(rank+1)*share], y[rank*share:(rank+1)*share])
    loss.backward()
    optimizer.step()
    return {'weights': model.state_dict(), 'grads': {n: p.grad for n, p in model.named_parameters()}}


if __name__ == '__main__':
    sys.path.insert(0, sys.argv[2])
    import gpt
    threads = lambda: len(os.listdir('/proc/self/task')) if os.path.isdir('/proc/self/task') else 0
    torch.ones(1, requires_grad=True).sum().backward() # autograd's own threads (one per GPU, if any) start here
    before = threads()
    rank, world_size = gpt.setup_distributed(gpt.SimpleNamespace(device='cpu'))
    for kind in ('sgd', 'muon'):
        step = one_step(gpt, rank, world_size, kind)
        if rank == 0:
            torch.save(step, f'{sys.argv[1]}.{kind}')
    gpt.teardown_distributed() # gpt.py's own ending: without it a rank can abort at exit
    for _ in range(100): # a thread the process group let go of may take a moment to end (on a busy machine)
        if threads() <= before:
            break
        time.sleep(0.02)
    with open(f'{sys.argv[1]}.threads{rank}', 'w') as f: # how many threads the process group left behind
        f.write(f'{threads() - before}\n')
