"""
muon.py: the lecture's exercise 4, "implement one feature from the transformer papers that people use: does it improve
your GPT?", answered with Muon (Keller Jordan, 2024): python gpt.py, with Muon training the matrices inside the blocks
and AdamW the rest. gpt.py's pieces are imported, not copied: only part one's configure_optimizer is replaced.

    python exercises/muon.py                          train as python gpt.py does, into muon.pt beside gpt.py
    python exercises/muon.py --resume                 carry on from muon.pt (gpt.py refuses its optimizer)
    python gpt.py --sample --ckpt_path=muon.pt        sample from it: the model is gpt.py's

Muon's rate is twice AdamW's (MUON_LR_SCALE: of 0.5x to 4x on a CPU, 2x did best; 1.5x as well, 3x worse), on the one
schedule; its weight decay shrinks the matrices by its own rate times weight_decay a step, as torch.optim.Muon does:
at AdamW's pace it memorised by 10,000 steps (a tie with AdamW), at this it ended lower.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) # gpt.py, from any folder
import gpt
from gpt import configure_optimizer as configure_adamw # gpt.py's own, before main() replaces it

MUON_LR_SCALE = 2.0 # Muon's rate, as a multiple of AdamW's learning_rate at every step


def configure_optimizer(model, learning_rate, weight_decay, beta2):
    """Part one's configure_optimizer, replaced: Muon for the blocks' matrices (attention and feed-forward), AdamW for
    the rest (lookups, the read-out and the vectors, as gpt.py decays them)."""
    hidden = [p for n, p in model.named_parameters() if n.startswith('blocks.') and p.dim() == 2]
    adamw = configure_adamw(model, learning_rate, weight_decay, beta2, exclude=hidden)
    # Newton-Schulz in bf16 on a GPU that has it (compute capability 8.0 on: torch.cuda.is_bf16_supported() says True
    # on a T4 too, which emulates it), as torch.optim.Muon; on a CPU without AMX bf16 made the step slower
    on_gpu = hidden[0].is_cuda and torch.cuda.get_device_capability(hidden[0].device)[0] >= 8
    # lr_scale: gpt.py's schedule gives this group that multiple of AdamW's rate (Run.before_update)
    muon = Muon([{'params': hidden, 'lr_scale': MUON_LR_SCALE}], lr=MUON_LR_SCALE * learning_rate,
                weight_decay=weight_decay, ns_dtype=torch.bfloat16 if on_gpu else torch.float32)
    optimizers = Optimizers(adamw=adamw, muon=muon)
    print(f"optimizer: {optimizers}") # before the run's first lines
    return optimizers


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (Nesterov momentum, adjust_lr_fn='match_rms_adamw'), with Newton-Schulz in a dtype of
    our choice: torch's runs it in bf16 everywhere, which on a CPU without AMX made the small model's step 1.8x AdamW's,
    against 1.2x in float32. It runs on a torch before 2.9 too, which has no Muon."""

    def __init__(self, params, lr, weight_decay, momentum=0.95, ns_dtype=torch.float32):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                if 'momentum_buffer' not in self.state[p]: # not setdefault: it would allocate zeros every step
                    self.state[p]['momentum_buffer'] = torch.zeros_like(p)
                buf = self.state[p]['momentum_buffer']
                buf.lerp_(p.grad, 1 - group['momentum'])
                # Nesterov: orthogonalise the gradient moved on along the momentum, not the momentum itself
                update = newton_schulz(p.grad.lerp(buf, group['momentum']), self.ns_dtype)
                p.mul_(1 - group['lr'] * group['weight_decay'])
                # an orthogonal A x B matrix's entries have an RMS of 1/sqrt(max(A, B)): 0.2, about AdamW's, after this
                p.add_(update, alpha=-group['lr'] * (0.2 * math.sqrt(max(p.shape))))


def newton_schulz(G, dtype, steps=5, eps=1e-7):
    """About the nearest orthogonal matrix to G (U V^T, where G = U S V^T): Keller Jordan's quintic iteration, whose
    coefficients push the singular values up fast; they end between about 0.7 and 1.2 rather than at 1, as good."""
    X = G.to(dtype)
    if G.size(0) > G.size(1):
        X = X.T # X @ X.T on the smaller side
    X = X / X.norm().clamp(min=eps) # a spectral norm of at most 1, where the iteration converges
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(steps):
        A = X @ X.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a) # a X + b (X X^T) X + c (X X^T)^2 X
    return X.T if G.size(0) > G.size(1) else X


class Optimizers:
    """Muon (Keller Jordan, 2024) for the matrices inside the blocks and AdamW for the rest, stepped as one optimizer:
    what train() and the checkpoints see. Muon keeps a momentum of the gradient, as SGD does, and replaces each
    matrix's update by about the nearest orthogonal matrix (five Newton-Schulz iterations): every direction of the
    matrix moves by the same amount, the rare ones as much as the dominant one. Embeddings and lm_head are lookups and
    a read-out, not maps between hidden states: they stay with AdamW, as do the vectors (biases, LayerNorm)."""

    def __init__(self, **optimizers):
        self.optimizers = optimizers

    def __repr__(self): # what configure_optimizer prints
        return f"Muon at {MUON_LR_SCALE:g}x AdamW's rate for the blocks' matrices, AdamW for the rest"

    @property
    def param_groups(self):
        return [group for o in self.optimizers.values() for group in o.param_groups]

    def zero_grad(self, set_to_none=True):
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.optimizers.values():
            o.step()

    def state_dict(self):
        return {name: o.state_dict() for name, o in self.optimizers.items()}

    def load_state_dict(self, state):
        for name, o in self.optimizers.items():
            o.load_state_dict(state[name])


def main(argv):
    gpt.configure_optimizer = configure_optimizer # the one seam: what part one's train() calls...
    shipped = gpt.HYPERPARAMETERS['ckpt_path'] # ...and a checkpoint of its own, not gpt.py's gpt.pt
    gpt.HYPERPARAMETERS['ckpt_path'] = os.path.join(os.path.dirname(shipped), 'muon.pt')
    try:
        gpt.main(argv)
    finally: # for this run only (main() may run again in one process)
        gpt.configure_optimizer, gpt.HYPERPARAMETERS['ckpt_path'] = configure_adamw, shipped


if __name__ == '__main__':
    gpt.run_command(main, 'muon.py')
