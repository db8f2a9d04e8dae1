"""
gpt.py: the decoder-only transformer of "Let's build GPT: from scratch, in code, spelled out", trained on Tiny
Shakespeare. Part one is the lecture, top to bottom: hyperparameters, data, model, training, sampling. Part two,
after the marked line, is what the lecture leaves out.

    python gpt.py                                   train (the lecture's run on CUDA, a smaller one elsewhere)
    python gpt.py --max_iters=2000 --batch_size=32  any hyperparameter as --name=value (python gpt.py --help)
    python gpt.py --resume                          carry on from the checkpoint
    python gpt.py --sample --prompt="ROMEO:"        sample from the checkpoint
    python gpt.py --sample --prompt="ROMEO:" --attention   and draw each head's attention, the embeddings (PNGs)
    python gpt.py --init_from=big.pt                finetune: a new run from another checkpoint's weights
    torchrun --standalone --nproc_per_node=8 gpt.py several GPUs (DDP)
"""
import torch
import torch.nn as nn
from torch.nn import functional as F

# hyperparameters
batch_size = 64 # how many independent sequences will we process in parallel?
block_size = 256 # what is the maximum context length for predictions?
max_iters = 5000 # training steps
eval_interval = 500 # estimate the loss every this many steps...
learning_rate = 3e-4
device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
eval_iters = 200 # ...over this many batches of each split
n_embd = 384 # the width of every token's vector
n_head = 6 # heads of self-attention in each block
n_layer = 6 # blocks
dropout = 0.2 # the share of activations zeroed at random in training
# the training recipe beyond the lecture; these defaults keep the lecture's (a constant rate, AdamW's own betas)
warmup_iters = 0 # raise the rate linearly from 0 to learning_rate over this many steps
lr_decay = 'none' # 'none' (a constant rate), 'cosine' or 'linear': from learning_rate down to min_lr at max_iters
min_lr = 0.0 # where the decay ends
beta2 = 0.999 # how fast AdamW's second moment forgets
weight_decay = 0.01 # AdamW's default, on the weight matrices only: see configure_optimizer
grad_clip = 0.0 # clip the gradient norm to this when > 0
max_time = 0.0 # seconds of training (evaluations included) at most; 0: no limit. The first limit reached ends the run
# the lecture's run takes about a day on a laptop's CPU: elsewhere than CUDA, these replace the values above still as
# the lecture has them (what you edit is kept, a shape whole; --config=lecture runs the block above as it stands)
small = dict(
    n_layer=4, n_head=4, n_embd=128, # 0.82M parameters: in a fixed time, a smaller model taking more steps ends lower
    block_size=128, # half the lecture's context: attention costs half as much per token, little worse for characters
    batch_size=16, # more, smaller steps: a small model early in training learns more per token from them
    max_iters=10000, # more steps helped little (10k to 20k ended within 0.012): a faster machine gets here sooner...
    max_time=570.0, # ...and a slower one stops here: the whole command within 10 minutes (the rest takes ~10 s)
    eval_interval=1000, # evaluations take time that training could use...
    eval_iters=50, # ...and 50 batches estimate the loss to about 0.02
    dropout=0.0, # a step costs 40% more with it: weight decay (below) regularises for free
    learning_rate=2e-3, # a small model trained briefly takes larger steps...
    warmup_iters=100, # ...which need a gentle start
    lr_decay='linear', # the last steps refine instead of bouncing around...
    min_lr=0.0, # ...all the way down
    beta2=0.99, # few steps: the second moment follows the gradients faster
    weight_decay=0.6, # up to 20 passes over the text: strong decay keeps it from memorising what it reads again
    grad_clip=1.0, # a bad batch cannot throw the large steps off course
)
# ------------

# data

def tokenizer(chars):
    # create a mapping from characters to integers
    stoi = { ch:i for i,ch in enumerate(chars) }
    itos = { i:ch for i,ch in enumerate(chars) }
    encode = lambda s: [stoi[c] for c in s] # encoder: take a string, output a list of integers
    decode = lambda l: ''.join([itos[i] for i in l]) # decoder: take a list of integers, output a string
    return encode, decode


def split_data(text, encode):
    # train and test splits
    data = torch.tensor(encode(text), dtype=torch.long)
    n = int(0.9*len(data)) # first 90% will be train, rest val
    train_data = data[:n]
    val_data = data[n:]
    return train_data, val_data


def get_batch(data, batch_size, block_size, device):
    # generate a small batch of data of inputs x and targets y
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i:i+block_size] for i in ix])
    y = torch.stack([data[i+1:i+block_size+1] for i in ix])
    x, y = x.to(device), y.to(device)
    return x, y


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device):
    # the mean loss over eval_iters batches of each split: far less noisy than one batch's loss
    out = {}
    model.eval()
    for split, data in splits.items():
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(data, batch_size, block_size, device)
            logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out

# model

class Head(nn.Module):
    """ one head of self-attention (version 4; the model runs MultiHeadAttention, all heads at once the same way) """

    def __init__(self, n_embd, head_size, block_size, dropout):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))

        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # input of size (batch, time-step, channels)
        # output of size (batch, time-step, head size)
        B,T,C = x.shape
        k = self.key(x)   # (B,T,hs)
        q = self.query(x) # (B,T,hs)
        # compute attention scores ("affinities"), scaled by head_size (not C: the lecture's correction)
        wei = q @ k.transpose(-2,-1) * k.shape[-1]**-0.5 # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf')) # (B, T, T): the future cannot communicate
        wei = F.softmax(wei, dim=-1) # (B, T, T)
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        v = self.value(x) # (B,T,hs)
        out = wei @ v # (B, T, T) @ (B, T, hs) -> (B, T, hs)
        return out


class MultiHeadAttention(nn.Module):
    """ multiple heads of self-attention in parallel: Head, with the heads as one more batch dimension (exercise 1) """

    def __init__(self, n_embd, num_heads, head_size, block_size, dropout):
        super().__init__()
        self.num_heads = num_heads
        # every head's query, key and value in one Linear: rows [queries of all heads, keys, values], head after head
        self.qkv = nn.Linear(n_embd, 3 * num_heads * head_size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)), persistent=False)
        self.attn_dropout = nn.Dropout(dropout) # Head's dropout, on the attention weights
        self.proj = nn.Linear(num_heads * head_size, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B,T,C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1) # (B,T,nh*hs) each: the heads side by side
        # the heads become a batch dimension: (B, T, nh*hs) -> (B, nh, T, hs)
        k = k.view(B, T, self.num_heads, -1).transpose(1, 2)
        q = q.view(B, T, self.num_heads, -1).transpose(1, 2)
        v = v.view(B, T, self.num_heads, -1).transpose(1, 2)
        # then Head.forward, line by line, for every head at once
        wei = q @ k.transpose(-2,-1) * k.shape[-1]**-0.5 # (B, nh, T, hs) @ (B, nh, hs, T) -> (B, nh, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf')) # (B, nh, T, T)
        wei = F.softmax(wei, dim=-1) # (B, nh, T, T)
        wei = self.attn_dropout(wei)
        out = wei @ v # (B, nh, T, T) @ (B, nh, T, hs) -> (B, nh, T, hs)
        out = out.transpose(1, 2).reshape(B, T, -1) # the heads side by side again, as torch.cat(..., dim=-1) did
        out = self.dropout(self.proj(out))
        return out


class FeedForward(nn.Module):
    """ a simple linear layer followed by a non-linearity """

    def __init__(self, n_embd, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """ Transformer block: communication followed by computation """

    def __init__(self, n_embd, n_head, block_size, dropout):
        # n_embd: embedding dimension, n_head: the number of heads we'd like
        super().__init__()
        head_size = n_embd // n_head
        self.sa = MultiHeadAttention(n_embd, n_head, head_size, block_size, dropout)
        self.ffwd = FeedForward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x)) # residual connections: the gradient flows straight through the additions
        x = x + self.ffwd(self.ln2(x))
        return x


class GPTLanguageModel(nn.Module):

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        # each token directly reads off the logits for the next token from a lookup table
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd) # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)

        # better init, added to the lecture's repository after the video
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # small weights: the first logits are near uniform, so the first loss is near ln(vocab_size)
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape

        # idx and targets are both (B,T) tensor of integers
        tok_emb = self.token_embedding_table(idx) # (B,T,C)
        pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device)) # (T,C)
        x = tok_emb + pos_emb # (B,T,C)
        x = self.blocks(x) # (B,T,C)
        x = self.ln_f(x) # (B,T,C)
        logits = self.lm_head(x) # (B,T,vocab_size)

        if targets is None:
            loss = None
        else:
            B, T, C = logits.shape
            logits = logits.view(B*T, C)
            targets = targets.view(B*T)
            loss = F.cross_entropy(logits, targets)

        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=0):
        # idx is (B, T) array of indices in the current context
        for _ in range(max_new_tokens):
            # crop idx to the last block_size tokens
            idx_cond = idx[:, -self.block_size:]
            # get the predictions
            logits, loss = self(idx_cond)
            # focus only on the last time step (and sharpen it, or keep the top_k: see --help)
            logits = logits[:, -1, :] / temperature # becomes (B, C)
            if top_k:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('inf')
            # apply softmax to get probabilities
            probs = F.softmax(logits, dim=-1) # (B, C)
            # sample from the distribution
            idx_next = torch.multinomial(probs, num_samples=1) # (B, 1)
            # append sampled index to the running sequence
            idx = torch.cat((idx, idx_next), dim=1) # (B, T+1)
        return idx

# training

def train(c, run):
    """ The lecture's run, c holding the hyperparameters; run is part two's machinery, called in single lines. """
    torch.manual_seed(c.seed)

    text = load_text(c.input_path, c.data_url, c.block_size) # read it in (downloaded on the first run)
    # here are all the unique characters that occur in this text
    chars = sorted(list(set(text)))
    vocab_size = len(chars)
    encode, decode = tokenizer(chars)
    train_data, val_data = split_data(text, encode)
    splits = {'train': train_data, 'val': val_data}

    model = GPTLanguageModel(vocab_size, c.block_size, c.n_embd, c.n_head, c.n_layer, c.dropout)
    m = model.to(c.device)
    # print the number of parameters in the model
    print(sum(p.numel() for p in m.parameters())/1e6, 'M parameters')

    # create a PyTorch optimizer (AdamW, weight decay on the matrices only: see part two)
    optimizer = configure_optimizer(m, c.learning_rate, c.weight_decay, c.beta2)
    model, start_iter = run.begin(m, optimizer, chars) # resume, speed-ups, several processes

    for iter in range(start_iter, c.max_iters):

        # every once in a while evaluate the loss on train and val sets (a resumed run has, where it starts), and at
        # the last step: max_iters - 1, or the step after max_time runs out
        if iter % c.eval_interval == 0 and iter != run.resumed_at or iter == run.last_iter:
            losses = estimate_loss(model, splits, c.eval_iters, c.batch_size, c.block_size, c.device)
            print(f"step {iter}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            run.after_eval(iter, losses) # history, checkpoint, what the model writes now

        # sample a batch of data
        xb, yb = get_batch(train_data, c.batch_size, c.block_size, c.device)

        # evaluate the loss
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.before_update(iter) # this step's learning rate; gradient clipping
        optimizer.step()
        if run.after_step(iter, loss): # progress; Ctrl-C saves and stops; True after the last step
            break

    run.end(val_data) # the checkpoint, its history, the loss on the whole val split

    # generate from the model, as --sample does: without dropout, from --prompt, at --temperature and --top_k
    m.eval()
    context = torch.tensor([encode(c.prompt)] if c.prompt else [[0]], dtype=torch.long, device=c.device)
    print(decode(m.generate(context, c.max_new_tokens, c.temperature, c.top_k)[0].tolist()))


# ======================================================================================================================
# PART TWO: NOT IN THE LECTURE. Everything above is the lecture; below, called from above in single lines, what it
# leaves out: the command line and its errors, download, checkpoints, several processes, progress, pictures, speed.
# ======================================================================================================================
import ctypes
import errno
import gc
import hashlib
import inspect
import io
import math
import os
import re
import shutil
import signal
import sys
import time
import tokenize
import traceback
from types import SimpleNamespace

import numpy as np
import requests

# options of a run, given like the hyperparameters (--name=value)
config = 'auto' # 'lecture', 'small', or 'auto': lecture on CUDA, small elsewhere
dtype = 'auto' # float32, bfloat16, float16, or auto: bf16 on new GPUs (and bf16 CPUs from n_embd 192), fp16 on old
seed = 1337 # the lecture's torch.manual_seed(1337): the same run every time
input_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'input.txt')
data_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
ckpt_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gpt.pt')
resume = False # continue training from ckpt_path
init_from = '' # a checkpoint to start the weights from (finetuning): a new run, its own recipe; the shape from it
eval_sample = 80 # characters the model writes after each evaluation, to watch it learn; 0: none
bench = False # time bench_iters training steps (ms/iter, tokens/s); no evaluation, no checkpoint
bench_iters = 10
sample = False # only sample from the checkpoint at ckpt_path (no training, no input.txt)
prompt = '' # the text the sample continues
max_new_tokens = 500 # how many characters to sample
temperature = 1.0 # below 1 sharpens the distribution, above 1 flattens it
top_k = 0 # sample from the k likeliest characters only; 0: no cutoff
attention = False # with --sample: draw each head's attention over --prompt, and the characters' embeddings (PNGs)

HYPERPARAMETERS = {k: v for k, v in globals().items() if not k.startswith('_') and type(v) in (bool, int, float, str)}
# the values of the names `small` replaces as the lecture has them: one that differs was edited, and is kept
LECTURE = dict(batch_size=64, block_size=256, max_iters=5000, eval_interval=500, learning_rate=3e-4, eval_iters=200,
               n_embd=384, n_head=6, n_layer=6, dropout=0.2, warmup_iters=0, lr_decay='none', min_lr=0.0, beta2=0.999,
               weight_decay=0.01, grad_clip=0.0, max_time=0.0)
SHAPE = ('block_size', 'n_embd', 'n_head', 'n_layer') # with the vocabulary, what a checkpoint's weights need
RECIPE = (*LECTURE, 'seed', 'input_path') # what --resume carries on from the checkpoint: shape, recipe, text
PROGRESS_EVERY = 30 # seconds between progress lines in a log (on a terminal: 10)
SHIPPED_ATTENTION = '61fe92a82f02eacf' # fingerprint(MultiHeadAttention) as shipped: FusedAttention computes it (tested)
CPU_FLAGS = open('/proc/cpuinfo').read().split() if os.path.exists('/proc/cpuinfo') else [] # (Linux's; bf16: dtype)
SHOWN = {'\n': '¶', ' ': '␣'} # the characters one cannot see, as the model's writing and the pictures show them

# ------------ the command line (UsageError, parse_args, check_device, load_text and run_command: the same in bigram.py)

class UsageError(Exception):
    """Bad input from the user: reported as one line, no traceback."""
    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def parse_args(argv, defaults=HYPERPARAMETERS, script=os.path.basename(__file__)):
    """--name=value for every hyperparameter, typed by its default: the run's config, and the names given."""
    c, given = SimpleNamespace(**defaults), set()
    valid = 'valid names: ' + ', '.join(defaults) + f' (python {script} --help)'
    for arg in argv:
        name, eq, value = arg[2:].partition('=')
        if not arg.startswith('--') or name not in defaults: # a bare 'sample' is no --sample
            raise UsageError(f"unknown hyperparameter {arg!r}; {valid}")
        default = defaults[name]
        try:
            setattr(c, name, {'true': True, '1': True, 'false': False, '0': False}[value.lower() if eq else 'true']
                    if type(default) is bool else type(default)(value)) # --sample alone means --sample=True
            if type(default) is float and not math.isfinite(getattr(c, name)):
                raise ValueError # nan, inf: no setting means them
        except (KeyError, ValueError):
            raise UsageError(f"bad value {value!r} for --{name}: expected {type(default).__name__} like {default!r}; {valid}")
        given.add(name)
    return c, given


def usage(): # --help: the docstring's commands, then every hyperparameter with its default and its comment above
    comments = dict(re.findall(r'^(\w+) = .*? # (.*)$', open(__file__, encoding='utf-8').read(), re.M))
    return '\n'.join([__doc__.strip(), '', 'hyperparameters and options (--name=value), with their defaults:', *(
        f"  {f'--{name}={v}':<26} {comments.get(name, '')}".rstrip() for name, v in HYPERPARAMETERS.items())])


def check_config(c):
    for names, bad, need in (('batch_size block_size max_iters eval_interval eval_iters n_embd n_head n_layer '
                              'bench_iters learning_rate temperature', lambda v: v <= 0, 'positive'),
                             ('max_new_tokens warmup_iters weight_decay grad_clip max_time top_k eval_sample',
                              lambda v: v < 0, '0 or more'), ('dropout beta2', lambda v: not 0 <= v < 1, 'in [0, 1)')):
        for name in names.split():
            if bad(getattr(c, name)):
                raise UsageError(f"--{name}={getattr(c, name)} must be {need}")
    if not 0 <= c.min_lr <= c.learning_rate:
        raise UsageError(f"--min_lr={c.min_lr} must be in [0, --learning_rate={c.learning_rate}]")
    for name, choices in (('lr_decay', ('none', 'cosine', 'linear')), ('config', ('auto', 'lecture', 'small')),
                          ('dtype', ('auto', 'float32', 'bfloat16', 'float16'))):
        if getattr(c, name) not in choices:
            raise UsageError(f"--{name}={getattr(c, name)!r} must be {', '.join(map(repr, choices[:-1]))} or "
                             f"{choices[-1]!r}")
    if c.n_embd % c.n_head:
        raise UsageError(f"--n_embd={c.n_embd} must be divisible by --n_head={c.n_head}")
    check_device(c.device)
    if not os.path.isdir(os.path.dirname(os.path.abspath(c.ckpt_path))):
        raise UsageError(f"--ckpt_path={c.ckpt_path}: no such folder; make it first")
    if os.path.isdir(c.ckpt_path) or not os.path.basename(c.ckpt_path):
        raise UsageError(f"--ckpt_path={c.ckpt_path!r} is a folder: name a file in it, e.g. "
                         f"--ckpt_path={os.path.join(c.ckpt_path, 'gpt.pt')}")


def check_device(device):
    kind, colon, index = device.partition(':')
    if kind not in ('cuda', 'mps', 'cpu') or colon and not index.isdigit():
        raise UsageError(f"--device={device!r} must be 'cuda', 'cuda:N', 'mps' or 'cpu'")
    have = torch.cuda.device_count() if kind == 'cuda' else kind == 'cpu' or torch.backends.mps.is_available()
    if int(index or 0) >= have: # (a machine with one GPU has cuda:0 alone)
        raise UsageError(f"--device={device} is not on this machine; use --device={'cuda' if have else 'cpu'}")


def choose_config(c, given):
    """The small configuration, where it runs: its name, and lines on the names it replaced and those edited."""
    which = c.config if c.config != 'auto' else 'lecture' if c.device.startswith('cuda') else 'small'
    replaced, edited, notes = [], [], []
    kept = which == 'small' and not c.init_from and any(n in given or getattr(c, n) != LECTURE[n] for n in SHAPE)
    for name, value in small.items() if which == 'small' else ():
        if name not in given and value != LECTURE[name] and not (kept and name in SHAPE):
            (replaced if getattr(c, name) == LECTURE[name] else edited).append(name)
    vars(c).update({name: small[name] for name in replaced})
    if replaced:
        line = next(i for i, l in enumerate(open(__file__, encoding='utf-8'), 1) if l.startswith('small = dict('))
        notes.append(f"on {c.device}, the small configuration (gpt.py line {line}) replaced the lecture's "
                     f"{', '.join(replaced)}: the lecture's run takes about a day on a CPU (--config=lecture for it)")
    if edited:
        notes.append(f"as edited at the top of gpt.py: {' '.join(f'{k}={getattr(c, k)}' for k in edited)}")
    if kept: # a shape is replaced whole or not at all: small's n_head=4 might not divide an n_embd of yours
        notes.append(f"kept whole, the shape you edited or gave: {' '.join(f'{k}={getattr(c, k)}' for k in SHAPE)}")
    return which, notes


def choose_dtype(c):
    """The precision training computes in (c.dtype becomes its name), and a note saying why (see --dtype above)."""
    why = 'as given'
    if c.device.startswith('cuda'):
        capability = torch.cuda.get_device_capability(c.device)
        native, capability = capability[0] >= 8, '.'.join(map(str, capability)) # (T4, V100: bf16 only emulated)
        if c.dtype == 'bfloat16' and not native:
            raise UsageError(f"--dtype=bfloat16: this GPU (compute capability {capability}) only emulates bf16, "
                             "several times slower; use --dtype=float16 (or auto)")
        if c.dtype == 'auto':
            c.dtype, why = ('bfloat16' if native else 'float16'), \
                f"auto: compute capability {capability} {'has' if native else 'lacks'} bf16 tensor cores"
    elif c.device.startswith('mps') and c.dtype in ('float16', 'bfloat16'):
        raise UsageError(f"--dtype={c.dtype} on MPS: autocast there fails on some torch versions (2.4 to about 2.8); "
                         "use --dtype=float32")
    elif c.dtype == 'auto': # a CPU: bf16 ran 3x slower without AMX or AVX512-BF16, faster with them from n_embd 192
        flag = c.device == 'cpu' and c.n_embd >= 192 and min({'amx_bf16', 'avx512_bf16'} & set(CPU_FLAGS), default=0)
        c.dtype, why = ('bfloat16', f'auto: a CPU with {flag}, n_embd 192 or more') if flag else \
            ('float32', f'auto on {c.device}')
    return f"dtype={c.dtype} ({why})" + (", with a GradScaler" if c.dtype == 'float16' else "")

# ------------ data: Tiny Shakespeare, or any UTF-8 text

def load_text(path, url, block_size=0):
    """The training text; downloaded to path (atomically: several processes may) if it is not there."""
    if not os.path.exists(path) and path != HYPERPARAMETERS['input_path'] and url == HYPERPARAMETERS['data_url']:
        raise UsageError(f"no text at {path}: check the path, or give --data_url= to download one there", 1) # (a typo)
    if not os.path.exists(path):
        print(f"downloading {url} to {path}", flush=True)
        tmp = f"{path}.part{os.getpid()}"
        try:
            with requests.get(url, timeout=30, stream=True) as r: # (a connection broken off: an error, not less text)
                r.raise_for_status()
                with open(tmp, 'wb') as f:
                    f.writelines(r.iter_content(1 << 16))
            os.replace(tmp, path) # a whole file or none: never a half-written input.txt
        except (requests.RequestException, OSError) as e:
            raise UsageError(f"could not download {url} ({e.__class__.__name__}); "
                             f"download it by hand and save it as {path}, or pass --input_path=", status=1)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    try:
        with open(path, 'rb') as f:
            text = (raw := f.read()).decode('utf-8').removeprefix('\ufeff') # a byte-order mark (Notepad's) is no text
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}; pass --input_path= with a UTF-8 text file", status=1)
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                         "convert it, or pass --input_path= with a UTF-8 file", status=1)
    if len(text) - int(0.9 * len(text)) <= block_size:
        raise UsageError(f"{path} has {len(text)} characters, too few for --block_size={block_size}: its last 10% "
                         f"(the validation split) needs more than {block_size}; use a longer text or a smaller "
                         "--block_size", status=1)
    return text

# ------------ the optimizer and its schedule

def configure_optimizer(model, learning_rate, weight_decay, beta2, exclude=()):
    """AdamW over every parameter but those in exclude (exercises/muon.py gives the blocks' matrices to Muon)."""
    left_out = {id(p) for p in exclude}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in left_out]
    # decay the matrices only: pulling biases and LayerNorm gains toward 0 does not regularise, it only biases
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    # fused: one kernel for all parameters, not several per tensor (a CPU's step at the small size: 8 ms to 2.5)...
    try: # (a copy of the groups: AdamW writes its defaults into them, fused=True among them)
        return torch.optim.AdamW([dict(g) for g in groups], lr=learning_rate, betas=(0.9, beta2), fused=True)
    except RuntimeError: # ...where this torch has that kernel for the device (not MPS in torch 2.4)
        return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, beta2))


def get_lr(it, c, done=0.0):
    """The rate for step it; the decay follows done, the share of max_time spent, where it is ahead of max_iters'."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / c.warmup_iters
    if c.lr_decay == 'none':
        return c.learning_rate
    warm = c.warmup_iters / c.max_iters # the decay starts where the warmup ended
    progress = min(1.0, (max(done, it / c.max_iters) - warm) / (1 - warm))
    share = 1.0 - progress if c.lr_decay == 'linear' else 0.5 * (1.0 + math.cos(math.pi * progress))
    return c.min_lr + share * (c.learning_rate - c.min_lr)

# ------------ the run: the hooks train() calls, in its order

class Run:

    def __init__(self, c, first_lines, ckpt, init, rank, world_size):
        vars(self).update(c=c, first_lines=first_lines, ckpt=ckpt, init=init, rank=rank, world_size=world_size)
        self.start = self.steps = ckpt['iter'] if ckpt else 0
        self.resumed_at = self.start if ckpt or c.bench else None # no evaluation where it starts: it had one
        self.last_iter = None if c.bench else c.max_iters - 1 # moves up when max_time runs out
        self.spent = self.elapsed = ckpt.get('elapsed', 0.0) if ckpt else 0.0 # seconds of training before this run
        self.best_val_loss, self.stopped_by = ckpt['best_val_loss'] if ckpt else float('inf'), 'max_iters'
        self.history = os.path.splitext(c.ckpt_path)[0] + '.csv'
        self.tokens_per_iter = c.batch_size * c.block_size * world_size
        self.stop_requested, self.old_handler = False, signal.getsignal(signal.SIGINT)

    def begin(self, model, optimizer, chars):
        c = self.c
        self.raw_model, self.optimizer, self.chars, self.decode = model, optimizer, chars, tokenizer(chars)[1]
        check_prompt(c.prompt, chars) # now, not after the training
        self.scaler = torch.amp.GradScaler(c.device.split(':')[0], enabled=c.dtype == 'float16')
        if self.ckpt:
            restore(self.ckpt, model, optimizer, self.scaler, chars, c)
        if self.init:
            self.first_lines.append(init_weights(model, self.init, chars, c.init_from))
        if self.ckpt or self.rank:
            torch.manual_seed(c.seed + self.rank + self.start) # each rank its own batches, a resumed run fresh ones
        model = speed_up(model, c, self.scaler, self.first_lines)
        if self.world_size > 1: # (the only buffers are the constant causal masks: none to broadcast)
            model = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False, device_ids=[
                int(c.device.split(':')[1])] if c.device.startswith('cuda') else None)
        if not self.rank and not c.bench and (not self.ckpt or not os.path.exists(self.history)): # (resumed: appends)
            with open(self.history, 'w') as f:
                f.write('step,train_loss,val_loss,elapsed_s\n')
        if not c.bench: # Ctrl-C finishes the step under way, then saves; a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, self.request_stop)
        print(*self.first_lines, sep='\n  ', flush=True)
        self.t0 = self.shown = time.perf_counter()
        self.every = 10 if sys.stderr.isatty() else PROGRESS_EVERY # seconds between progress lines (a log: fewer)
        return model, self.start

    def request_stop(self, signum, frame):
        self.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler) # a second Ctrl-C stops at once

    def after_eval(self, iter, losses):
        if not all(map(math.isfinite, losses.values())): # nothing more to learn from, or to sample
            raise UsageError(f"step {iter}: the loss is {losses['val']}, training diverged: lower --learning_rate "
                             f"(here {self.c.learning_rate:g})", status=1)
        if not self.rank:
            with open(self.history, 'a') as f:
                f.write(f"{iter},{losses['train']:.4f},{losses['val']:.4f},{time.perf_counter() - self.t0:.1f}\n")
            if losses['val'] < self.best_val_loss:
                self.best_val_loss = losses['val']
                if iter > (self.resumed_at or 0):
                    self.save(iter)
            if self.c.eval_sample: # what the model writes now, seeded; the training's random numbers left as they were
                kind = self.c.device.split(':')[0] # (cpu:0 too: fork_rng forks the CPU's always)
                with torch.random.fork_rng([self.c.device] if kind != 'cpu' else [], device_type=kind):
                    torch.manual_seed(self.c.seed)
                    idx = self.raw_model.eval().generate(torch.zeros((1, 1), dtype=torch.long, device=self.c.device),
                                                         self.c.eval_sample)[0, 1:]
                self.raw_model.train()
                print('  writes:', self.decode(idx.tolist()).replace('\n', SHOWN['\n']))

    def before_update(self, iter):
        c = self.c
        done = self.elapsed / c.max_time if c.max_time > 0 else 0.0
        for group in self.optimizer.param_groups:
            group['lr'] = get_lr(iter, c, done) * group.get('lr_scale', 1.0) # a group's share (exercises/muon.py)
        self.scaler.unscale_(self.optimizer) # float16: the scaled loss's gradients divided back (disabled: nothing)
        if c.grad_clip > 0 or self.scaler.is_enabled(): # (max_norm inf: the norm alone)
            norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), c.grad_clip or math.inf)
        self.scaler.update() # half the scale after an overflow, twice after 2000 steps without one (disabled: nothing)
        if self.scaler.is_enabled() and not torch.isfinite(norm): # an overflow: no gradient, no step (as scaler.step)
            self.optimizer.zero_grad(set_to_none=True)

    def after_step(self, iter, loss):
        c = self.c
        if c.bench: # timed from the end of the second step; the GPU waited for, its steps done, not only queued
            torch.cuda.synchronize(c.device) if 'cuda' in c.device else c.device == 'cpu' or torch.mps.synchronize()
            if iter == self.start + 1:
                self.t0 = time.perf_counter()
            return iter == c.max_iters - 1
        self.steps, self.elapsed, stop = iter + 1, self.spent + time.perf_counter() - self.t0, self.stop_requested
        if self.world_size > 1: # any rank's Ctrl-C, and rank 0's clock: every rank stops at the same step
            t = torch.tensor([float(stop), 0.0 if self.rank else self.elapsed], device=c.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            stop, self.elapsed = t[0].item() > 0, t[1].item()
        if c.max_time > 0 and self.elapsed >= c.max_time and self.last_iter > iter + 1:
            self.last_iter, self.stopped_by = iter + 1, 'max_time' # one more evaluation and step, as at max_iters
        now = time.perf_counter()
        if not self.rank and now - self.shown >= self.every:
            self.shown, its = now, (self.steps - self.start) / (now - self.t0) # (evaluations included)
            left = max(0.0, min((self.last_iter + 1 - self.steps) / its, (c.max_time or math.inf) - self.elapsed))
            print(f"step {self.steps}/{c.max_iters} | loss {loss.item():.4f} | {its:.2f} it/s | "
                  f"{its * self.tokens_per_iter / 1000:.1f}k tok/s | {int(left // 60)}m{int(left % 60):02d}s left",
                  file=sys.stderr, flush=True)
        if stop:
            if not self.rank:
                self.save(self.steps)
                where = '' if c.ckpt_path == HYPERPARAMETERS['ckpt_path'] else f' --ckpt_path={c.ckpt_path}'
                print(f"interrupted at step {self.steps}: saved {c.ckpt_path}; continue with 'python {sys.argv[0]} "
                      f"--resume{where}' or sample with 'python {sys.argv[0]} --sample{where}'", file=sys.stderr)
            raise SystemExit(130)
        return iter >= self.last_iter

    def end(self, val_data):
        c = self.c
        signal.signal(signal.SIGINT, self.old_handler)
        torch.set_float32_matmul_precision('highest') # what follows runs part one's code in float32, as --sample does
        if c.bench: # the time since the second step, synchronised at the last
            dt = (time.perf_counter() - self.t0) / c.bench_iters
            return print(f"bench: {dt * 1000:.1f} ms/iter | {self.tokens_per_iter / dt / 1000:.1f}k tok/s")
        vars(self.raw_model).pop('forward', None) # speed_up's autocast and fused attention, undone
        for module in [m for m in self.raw_model.modules() if type(m) is FusedAttention]:
            module.__class__ = MultiHeadAttention
        if not self.rank:
            self.save(self.steps)
            print(f"trained in {time.perf_counter() - self.t0:.1f} s, {self.steps} steps ({self.stopped_by} reached); "
                  f"saved {c.ckpt_path} and {self.history}")
            plot_history(self.history)
            # estimate_loss's random batches stray from it by up to 0.02: this is the number to compare runs by
            print(f"val loss on the whole val split ({(len(val_data) - 1) // c.block_size} windows of {c.block_size} "
                  f"characters): {whole_split_loss(self.raw_model.eval(), val_data, c.block_size):.4f}")
            self.raw_model.train() # as part one left it: its own lines say how its sample is drawn
        torch.manual_seed(c.seed) # the sample that follows is the one --sample draws from the checkpoint

    def save(self, iter): # the checkpoint's format, which load_checkpoint reads
        save_atomically(self.c.ckpt_path, {'model': self.raw_model.state_dict(), 'config': vars(self.c),
            'optimizer': self.optimizer.state_dict(), 'scaler': self.scaler.state_dict(), 'chars': self.chars,
            'iter': iter, 'best_val_loss': self.best_val_loss, 'elapsed': self.spent + time.perf_counter() - self.t0})


@torch.no_grad()
def whole_split_loss(model, data, block_size):
    """The mean loss over every character of the split, read in windows of block_size, side by side (eval mode)."""
    n, device = (len(data) - 1) // block_size, next(model.parameters()).device
    x, y = data[:n * block_size].view(n, block_size), data[1:n * block_size + 1].view(n, block_size)
    per = max(1, 2**22 // block_size**2) # windows at a time: attention weights of 67 MB a layer at the small size
    return sum(model(x[i:i + per].to(device), y[i:i + per].to(device))[1].item() * len(x[i:i + per])
               for i in range(0, n, per)) / n

# ------------ what the model learned: its writing at each evaluation, pictures

def pyplot(): # matplotlib.pyplot drawing to files, or None without matplotlib
    try:
        import matplotlib.pyplot as plt
        return plt.switch_backend('Agg') or plt # a file, no window
    except ImportError:
        return None


def plot_history(history):
    if plt := pyplot():
        step, train, val = np.loadtxt(history, delimiter=',', skiprows=1, usecols=(0, 1, 2), ndmin=2).T
        plt.figure(figsize=(6, 4))
        plt.plot(step, train, label='train'); plt.plot(step, val, label='val')
        plt.xlabel('step'); plt.ylabel('loss'); plt.legend(); plt.grid(alpha=0.3)
        plt.savefig(os.path.splitext(history)[0] + '.png', dpi=100, bbox_inches='tight')
        plt.close()


@torch.no_grad()
def attention_weights(model, idx):
    """Each head's wei for idx (1, T), as part one computes it: what MultiHeadAttention hands its attn_dropout (or
    each Head its dropout, in the lecture's list of Heads). (n_layer, n_head, T, T)"""
    weights, T = [], idx.shape[1]
    hooks = [(m.dropout if isinstance(m, Head) else m.attn_dropout).register_forward_pre_hook(
        lambda module, args: weights.append(args[0][0])) for m in model.modules()
        if isinstance(m, Head) or hasattr(m, 'attn_dropout')]
    model(idx)
    [hook.remove() for hook in hooks]
    if not weights or any(w.shape[-2:] != (T, T) for w in weights) or \
            ((wei := torch.cat([w.reshape(-1, T, T) for w in weights])).sum(-1) - 1).abs().max() > 1e-3: # (one read)
        raise UsageError("--attention finds no attention weights where it looks: what MultiHeadAttention hands its "
                         "attn_dropout (or each Head its dropout), rows of softmax over the prompt", status=1)
    return wei.cpu().view(len(model.blocks), -1, T, T)


def embedding_points(model):
    """Each character's row of the token embedding table, projected on the table's first two principal components."""
    centred = (table := model.token_embedding_table.weight.detach().cpu().float()) - table.mean(0)
    return centred @ torch.linalg.svd(centred, full_matrices=False)[2][:2].T # (vocab_size, 2)


def draw_pictures(model, prompt, chars, encode, c):
    plt, base, prompt = pyplot(), os.path.splitext(c.ckpt_path)[0], prompt[-c.block_size:]
    wei = attention_weights(model.eval(), torch.tensor([encode(prompt)], device=c.device)).float().numpy()
    (layers, heads, T, _), shown, side = wei.shape, [SHOWN.get(ch, ch) for ch in prompt], 0.3 + 0.16 * len(prompt)
    fig, axes = plt.subplots(layers, heads, figsize=(side * heads, side * layers), squeeze=False, layout='constrained')
    for (layer, head), ax in np.ndenumerate(axes):
        ax.imshow(wei[layer, head], cmap='Blues', vmin=0, vmax=1)
        ax.set_xticks(range(T), shown, fontsize=7); ax.set_yticks(range(T), shown, fontsize=7)
        ax.set_title(f'block {layer}, head {head}', fontsize=9)
    fig.supxlabel('the characters it reads from'); fig.supylabel('the character that reads')
    fig.savefig(base + '-attention.png', dpi=80)
    kind = lambda ch: 3 if not ch.isalpha() else 2 if ch.isupper() else int(ch not in 'aeiou')
    points = embedding_points(model).numpy()
    plt.figure(figsize=(7, 7)).gca().scatter(*points.T, s=0) # (text alone sets no limits to the axes)
    for (x, y), ch in zip(points, chars):
        plt.text(x, y, SHOWN.get(ch, ch), color=f'C{kind(ch)}', fontsize=12, ha='center', va='center')
    plt.axis('equal'); plt.axis('off'); plt.margins(0.1)
    plt.title("each character's embedding on the table's first two principal components\n"
              "(blue: vowels, orange: consonants, green: capitals, red: the rest)")
    plt.savefig(base + '-embedding.png', dpi=80, bbox_inches='tight')
    plt.close('all')
    return base + '-attention.png', base + '-embedding.png'

# ------------ speed: the same model, computed faster

def speed_up(model, c, scaler, notes):
    """What part one says, computed faster: MultiHeadAttention as shipped by a fused kernel, autocast, memory reuse."""
    torch.set_float32_matmul_precision('high') # TF32 matmuls on GPUs that have them
    if c.device == 'cpu' and os.name == 'posix' and hasattr(libc := ctypes.CDLL(None), 'mallopt'): # (glibc's)
        libc.mallopt(-4, 0) # M_MMAP_MAX=0: a freed tensor over 32 MB stays for the next step, not faulted in anew
    shipped = fingerprint(MultiHeadAttention) == SHIPPED_ATTENTION
    for module in (fused := [m for m in model.modules() if shipped and type(m) is MultiHeadAttention]):
        module.__class__ = FusedAttention
    notes.append('attention: MultiHeadAttention ' + ('as shipped, run by the fused kernel' if fused else 'as edited, '
                 'run as written' if not shipped else "not in the model: part one's own code runs as written"))
    if c.dtype != 'float32': # training and evaluation under autocast (Run.end takes it off: the sample is float32)
        forward = torch.autocast(c.device.split(':')[0], dtype=getattr(torch, c.dtype))(model.forward)
        def autocast_forward(idx, targets=None): # (no targets: a sample, the writes line's, drawn in float32)
            logits, loss = forward(idx, targets) if targets is not None else type(model).forward(model, idx)
            if scaler.is_enabled() and loss is not None and loss.requires_grad: # float16: backward starts from
                loss.register_hook(scaler.scale) # loss * scale, as scaler.scale(loss).backward() would
            return logits, loss
        model.forward = autocast_forward
    return model


def fingerprint(cls):
    """A hash of the class's code, comments and layout aside: any other change to it changes the hash."""
    try: # (before Python 3.13, the first class of that name in the file: a copy further down is not that one)
        src, at = inspect.getsourcelines(cls)
        code = [(tokenize.tok_name[t.type], t.string.strip()) for t in tokenize.generate_tokens(io.StringIO(
            ''.join(src)).readline) if t.type not in (tokenize.NL, tokenize.COMMENT)]
    except (OSError, TypeError, tokenize.TokenError): # no source to read (a notebook, say): not the shipped code
        return None
    here = all(at <= f.__code__.co_firstlineno < at + len(src) for f in vars(cls).values() if inspect.isfunction(f))
    return hashlib.sha256(repr(code).encode()).hexdigest()[:16] if here else None


class FusedAttention(MultiHeadAttention):
    """ MultiHeadAttention in one fused kernel (flash attention on a GPU): softmax(q @ k^T * hs**-0.5, mask) @ v """
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = [t.view(B, T, self.num_heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1)] # (B,nh,T,hs)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.attn_dropout.p * self.training)
        return self.dropout(self.proj(out.transpose(1, 2).reshape(B, T, -1))) # (num_heads * head_size channels)


# ------------ several processes (torchrun): one rank per GPU, or per CPU process with gloo

def setup_distributed(c):
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return 0, 1
    if c.device.startswith('mps'):
        raise UsageError("torchrun on MPS: gloo, its only backend there, cannot carry MPS tensors; run one process "
                         "(python gpt.py), or pass --device=cpu")
    # imported before the process group exists, not by DDP after it: its functions' defaults (group=group.WORLD) would
    # hold the process group for good, destroy_process_group could not free it, and its threads would outlive us
    import torch.distributed.nn.functional
    if c.device.startswith('cuda'): # a GPU per rank, made current: NCCL's collectives act on the current one
        c.device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
        torch.cuda.set_device(c.device)
    nccl = c.device.startswith('cuda') and torch.distributed.is_nccl_available() # (Windows has no NCCL)
    torch.distributed.init_process_group('nccl' if nccl else 'gloo')
    return int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])


def teardown_distributed():
    """Frees the process group while Python is fully alive: else a gloo thread aborts the exit (pytorch#179291)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect() # the DDP wrapper and its reducer hold the process group: let them go first
        torch.distributed.destroy_process_group() # the last reference: its destructor joins the threads

# ------------ checkpoints

def save_atomically(path, obj):
    """torch.save(obj, path), all or nothing: a kill, a full disk or a file held open leaves what was there."""
    tmp, written = f"{path}.tmp{os.getpid()}", False
    buffer = io.BytesIO() # torch.save into a file turns a full disk into a RuntimeError; f.write, an OSError
    torch.save(obj, buffer)
    try:
        with open(tmp, 'wb') as f: # written, then flushed to the disk before it replaces the old one
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno()) # (Windows syncs only a file opened for writing)
        written = True
        os.replace(tmp, path) # atomic: a kill at any moment leaves the old checkpoint or the new one
    except OSError as e: # a full disk, a read-only folder; or Windows, which replaces no file another program has open
        raise UsageError(f"cannot write {path} ({e.strerror or e}); " + (
            f"is it open in another program? This checkpoint is kept as {tmp}" if written else
            f"{'the one there is as it was; ' if os.path.exists(path) else ''}"
            f"{'free some space, or ' if e.errno in (errno.ENOSPC, errno.EFBIG) else ''}pass another --ckpt_path="), 1)
    finally:
        if os.path.exists(tmp) and not written:
            os.remove(tmp)


def load_checkpoint(path, option='ckpt_path', c=None, given=(), keys=()):
    """The checkpoint at path (--option), its values for keys put in c unless given (a shape must be the same)."""
    if not os.path.exists(path):
        raise UsageError(f"no checkpoint at {path}: train one first with 'python gpt.py', or pass --{option}=", 1)
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True) # a GPU checkpoint loads on any machine
        assert isinstance(ckpt, dict) and {'model', 'config', 'chars', 'iter', 'best_val_loss'} <= ckpt.keys()
        globals().update((k, ckpt['config'][k]) for k in SHAPE) # the shape that runs, where the lecture's code reads it
        GPTLanguageModel(len(ckpt['chars']), *(ckpt['config'][k] for k in SHAPE)).load_state_dict(ckpt['model'])
    except Exception as e: # (the weights fit this gpt.py's model, or nothing of it is read)
        raise UsageError(f"{path} is not a readable gpt.py checkpoint ({e.__class__.__name__}): it may be truncated, "
                         f"or an edited gpt.py's; retrain with 'python gpt.py' or pass --{option}=", status=1)
    for name in keys:
        saved = ckpt['config'][name]
        if name in given and getattr(c, name) != saved and name in SHAPE: # the weights fit no other
            raise UsageError(f"the checkpoint {path} has {name}={saved}, not --{name}={getattr(c, name)}; "
                             f"drop --{name}, or pass another --{option}=")
        setattr(c, name, getattr(c, name) if name in given else saved)
    return ckpt


def restore(ckpt, model, optimizer, scaler, chars, c):
    """--resume: the weights, the optimizer's moments (its settings: this run's) and float16's loss scale."""
    if ckpt['chars'] != chars:
        raise UsageError(f"{c.input_path} has another vocabulary than the checkpoint {c.ckpt_path}; resume with the "
                         "text it was trained on, or start a run from its weights with --init_from=", status=1)
    model.load_state_dict(ckpt['model'])
    settings = [{k: v for k, v in group.items() if k != 'params'} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt['optimizer'])
    except (KeyError, ValueError):
        raise UsageError(f"{c.ckpt_path} holds another optimizer's state (gpt.py's, or exercises/muon.py's): resume "
                         "it with the script that trained it") from None
    for group, setting in zip(optimizer.param_groups, settings):
        group.update(setting)
    if ckpt.get('scaler') and scaler.is_enabled():
        scaler.load_state_dict(ckpt['scaler'])


def init_weights(model, init, chars, path):
    """--init_from: the weights, each character's rows (token embedding, lm_head) found by the character: a new one
    keeps a fresh model's rows, one the new text lacks is dropped. Returns a line saying so."""
    state, old = dict(init['model']), {ch: i for i, ch in enumerate(init['chars'])}
    here = torch.tensor([i for i, ch in enumerate(chars) if ch in old], dtype=torch.long)
    there = torch.tensor([old[chars[i]] for i in here.tolist()], dtype=torch.long)
    for name, fresh in model.state_dict().items():
        if name in ('token_embedding_table.weight', 'lm_head.weight', 'lm_head.bias'): # (on the CPU, as the checkpoint)
            state[name] = fresh.to('cpu', copy=True).index_copy_(0, here, state[name][there])
    model.load_state_dict(state) # copies each tensor to the model's device
    new, dropped = sorted(set(chars) - set(old)), sorted(set(old) - set(chars))
    return (f"weights from {path}: {len(here)} of this text's {len(chars)} characters known; new: {''.join(new)!r}; "
            f"dropped: {''.join(dropped)!r}")


def sample_from_checkpoint(c, given):
    """--sample, and --attention's pictures: from the checkpoint, with no training and no input.txt."""
    if c.attention and not c.prompt:
        raise UsageError("--attention draws the attention over --prompt: give one, e.g. --prompt='ROMEO:'")
    if c.attention and not pyplot():
        raise UsageError("--attention draws with matplotlib, which is not installed: pip install matplotlib", status=1)
    ckpt = load_checkpoint(c.ckpt_path, 'ckpt_path', c, given, SHAPE)
    check_config(c)
    globals().update((name, getattr(c, name)) for name in HYPERPARAMETERS) # as in main
    check_prompt(c.prompt, ckpt['chars'])
    encode, decode = tokenizer(ckpt['chars'])
    model = GPTLanguageModel(len(ckpt['chars']), c.block_size, c.n_embd, c.n_head, c.n_layer).to(c.device).eval()
    model.load_state_dict(ckpt['model']) # (copied onto the model's device)
    if c.attention:
        print(*draw_pictures(model, c.prompt, ckpt['chars'], encode, c), sep='\n', file=sys.stderr)
    torch.manual_seed(c.seed)
    # the same lines as the sample at the end of train(): the prompt, or the lecture's token 0 (a newline here)
    context = torch.tensor([encode(c.prompt)] if c.prompt else [[0]], dtype=torch.long)
    print(decode(model.generate(context.to(c.device), c.max_new_tokens, c.temperature, c.top_k)[0].tolist()))


def check_prompt(prompt, chars):
    if unknown := ''.join(sorted(set(prompt) - set(chars))):
        raise UsageError(f"--prompt has characters the model never saw: {unknown!r}; use only its text's characters")

# ------------ the command

def main(argv):
    if '-h' in argv or '--help' in argv:
        return print(usage())
    c, given = parse_args(argv)
    if c.sample or c.attention:
        return sample_from_checkpoint(c, given)
    ckpt, init, which, notes = None, None, 'resumed', []
    if c.resume: # the run carries on as it started: its shape, recipe and text, unless given here
        if c.init_from:
            raise UsageError("--init_from starts a new run from a checkpoint's weights, --resume carries one on: "
                             "give one of them")
        ckpt = load_checkpoint(c.ckpt_path, 'ckpt_path', c, given, RECIPE)
        if not os.path.exists(c.input_path) and 'input_path' not in given: # trained in another folder or machine:
            c.input_path = HYPERPARAMETERS['input_path'] # this gpt.py's text (restore checks its vocabulary)
        spent, done = ckpt.get('elapsed', 0.0), [] # a limit reached: one line on what to give, not a step or two
        if ckpt['iter'] >= c.max_iters:
            done.append((f"step {ckpt['iter']} of --max_iters={c.max_iters}", f"--max_iters={ckpt['iter'] * 2}"))
        if 0 < c.max_time <= spent:
            done.append((f"{spent:.0f} s of --max_time={c.max_time:g}", f"--max_time={spent + c.max_time:.0f}"))
        if done and not c.bench: # (--bench takes bench_iters steps more, whatever the budget)
            raise UsageError(f"{c.ckpt_path} has reached {' and '.join(d for d, _ in done)}: to train on, give a "
                             f"larger budget, e.g. --resume {' '.join(g for _, g in done)}")
    else:
        which, notes = choose_config(c, given | set(SHAPE) if c.init_from else given) # the shape: below
    if c.init_from: # a new run, its own recipe; the weights, hence the shape, from the checkpoint
        if os.path.abspath(c.init_from) == os.path.abspath(c.ckpt_path):
            raise UsageError(f"--init_from={c.init_from} is also --ckpt_path: this run would write over the "
                             "checkpoint it starts from; pass another --ckpt_path=")
        init = load_checkpoint(c.init_from, 'init_from', c, given, SHAPE)
        if 'learning_rate' not in given: # the lecture's advice for a finetune; half did best here (README, EX3)
            c.learning_rate /= 2
            notes.append(f"learning_rate={c.learning_rate:g}: half, to finetune (or give --learning_rate=)")
    check_config(c)
    notes.append(choose_dtype(c)) # the device's, on every run: not carried by --resume
    if c.device == 'cpu' and torch.version.cuda is None and shutil.which('nvidia-smi'): # (pip's torch on Windows)
        notes.append("an NVIDIA GPU is here, but this torch has no CUDA: pip uninstall torch, then pip install torch "
                     "--index-url https://download.pytorch.org/whl/cu126 (or your driver's: pytorch.org/get-started)")
    rank, n = setup_distributed(c)
    if rank: # only rank 0 prints and samples
        sys.stdout, c.max_new_tokens, c.eval_sample = open(os.devnull, 'w'), 0, 0
    head = (f"config {which} on {c.device}{f' x {n} processes' if n > 1 else ''}: n_layer={c.n_layer} n_head="
            f"{c.n_head} n_embd={c.n_embd} block_size={c.block_size} batch_size={c.batch_size}"
            f"{f' per rank, {c.batch_size * n} in all' if n > 1 else ''} max_iters={c.max_iters} "
            f"learning_rate={c.learning_rate:g}" + (f" max_time={c.max_time:g}s" if c.max_time > 0 else ""))
    if ckpt:
        head += f", from step {ckpt['iter']} of {c.ckpt_path}" + (
            f"; {ckpt.get('elapsed', 0.0):.1f} s of it spent before" if c.max_time > 0 else "")
    if c.bench: # bench_iters steps after two to warm up (allocator, kernels, compilation): no evaluation, no sample
        c.max_iters, c.max_new_tokens = (ckpt['iter'] if ckpt else 0) + 2 + c.bench_iters, 0
        c.eval_interval = c.max_iters # (from the start, which is not evaluated, no multiple of it is reached)
    # the names at the top hold the values that run: a lecture line reading block_size, not c.block_size, gets them
    globals().update((name, getattr(c, name)) for name in HYPERPARAMETERS)
    run = Run(c, [head, *notes], ckpt, init, rank, n)
    try:
        train(c, run)
    except BaseException as e:
        traceback.clear_frames(e.__traceback__) # its frames hold the DDP wrapper: let teardown_distributed free it
        if n == 1 and re.search("out of memory|can't allocate memory|not enough memory", str(e)): # GPU's, CPU's
            raise UsageError(f"out of memory on {c.device} at --batch_size={c.batch_size}: lower it or --block_size", 1)
        raise
    finally:
        signal.signal(signal.SIGINT, run.old_handler)
        teardown_distributed()


def run_command(main, script=os.path.basename(__file__)):
    """main(sys.argv[1:]), with what the user did wrong as one line and the status to match; for the exercises too."""
    if hasattr(sys.stdout, 'reconfigure'): # (IDLE's, notebooks': no. stderr writes what it cannot as \u escapes)
        sys.stdout.reconfigure(errors='replace', line_buffering=True) # a log gets each line at once; '?' if unwritable
    try:
        main(sys.argv[1:])
        sys.stdout.flush() # here, where a reader that went away is handled below, not at the interpreter's exit
    except UsageError as e:
        if os.environ.get('RANK', '0') != '0': # under torchrun every rank finds the same error: rank 0 says it, and
            sys.exit(0) # fails; a rank failing first would have torchrun stop rank 0 before it could say it
        print(f"{script}: error: {e}", file=sys.stderr)
        sys.exit(e.status)
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError: # the reader went away (python gpt.py --sample | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()) # so the exit's flush cannot fail again
        sys.exit(141)
    except OSError as e: # a file beside the checkpoint (a read-only folder, say), or the output, not written
        sys.exit(f"{script}: error: cannot write {e.filename or 'the output'} ({e.strerror or e})" + (
            "; pass --ckpt_path= in a folder you can write to: the run's files go beside it" if e.filename else ""))


if __name__ == '__main__':
    run_command(main)
