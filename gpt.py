"""
gpt.py: the decoder-only transformer of "Let's build GPT: from scratch, in code, spelled out", trained on Tiny
Shakespeare. Part one is the lecture, top to bottom: hyperparameters, data, model, training, sampling. Part two,
after the marked line, is what the lecture leaves out.

    python gpt.py                                   train (the lecture's run on CUDA, a smaller one elsewhere)
    python gpt.py --max_iters=2000 --n_layer=4      any hyperparameter as --name=value (python gpt.py --help)
    python gpt.py --resume                          carry on from the checkpoint
    python gpt.py --sample --prompt="ROMEO:"        sample from the checkpoint
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
# the lecture's run takes about a day on a laptop's CPU: elsewhere than CUDA, these replace the values above that are
# still the lecture's (an edit of yours above is kept; --config=lecture runs the block above as it stands)
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
            run.after_eval(iter, losses) # history, checkpoint

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
# leaves out: the command line and its errors, download, checkpoints, several processes, progress, benchmark, speed.
# ======================================================================================================================
import errno
import gc
import hashlib
import inspect
import io
import math
import os
import re
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
compile = False # torch.compile the model (on CUDA; it did not help on a CPU)
dtype = 'auto' # float32, bfloat16, float16, or auto: bf16 on new GPUs and bf16 CPUs (n_embd >= 192), fp16 on old GPUs
seed = 1337 # the lecture's torch.manual_seed(1337): the same run every time
input_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'input.txt')
data_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
ckpt_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gpt.pt')
resume = False # continue training from ckpt_path
init_from = '' # a checkpoint to start the weights from (finetuning): a new run, its own recipe; the shape from it
bench = False # time bench_iters training steps (ms/iter, tokens/s); no evaluation, no checkpoint
bench_iters = 10
sample = False # only sample from the checkpoint at ckpt_path (no training, no input.txt)
prompt = '' # the text the sample continues
max_new_tokens = 500 # how many characters to sample
temperature = 1.0 # below 1 sharpens the distribution, above 1 flattens it
top_k = 0 # sample from the k likeliest characters only; 0: no cutoff

HYPERPARAMETERS = {k: v for k, v in globals().items() if not k.startswith('_') and type(v) in (bool, int, float, str)}
# the values of the names `small` replaces as the lecture has them: one that differs was edited, and is kept
LECTURE = dict(batch_size=64, block_size=256, max_iters=5000, eval_interval=500, learning_rate=3e-4, eval_iters=200,
               n_embd=384, n_head=6, n_layer=6, dropout=0.2, warmup_iters=0, lr_decay='none', min_lr=0.0, beta2=0.999,
               weight_decay=0.01, grad_clip=0.0, max_time=0.0)
# MultiHeadAttention's fingerprint as shipped: FusedAttention computes what that code does (a test checks the value)
SHIPPED_ATTENTION = '6e3bcaddaf79fe1f'
SHAPE = ('block_size', 'n_embd', 'n_head', 'n_layer') # with the vocabulary, what a checkpoint's weights need
PROGRESS_EVERY = 30 # seconds between progress lines in a log (on a terminal: 10)

# ------------
# the command line

class UsageError(Exception):
    """Bad input from the user: reported as one line, no traceback."""
    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def parse_args(argv, defaults=HYPERPARAMETERS, script='gpt.py'):
    """--name=value for every hyperparameter, typed by its default. Returns (values, names given)."""
    cfg, given = dict(defaults), set()
    valid = 'valid names: ' + ', '.join(defaults) + f' (python {script} --help)'
    for arg in argv:
        name, eq, value = arg[2:].partition('=')
        if not arg.startswith('--') or name not in defaults: # a bare 'sample' is no --sample
            raise UsageError(f"unknown hyperparameter {arg!r}; {valid}")
        default = defaults[name]
        try:
            cfg[name] = {'true': True, '1': True, 'false': False, '0': False}[value.lower() if eq else 'true'] \
                if type(default) is bool else type(default)(value) # --sample alone means --sample=True
        except (KeyError, ValueError):
            raise UsageError(f"bad value {value!r} for --{name}: expected {type(default).__name__} like {default!r}; {valid}")
        given.add(name)
    return cfg, given


def usage():
    """--help: the commands of the docstring, then every hyperparameter with its default and its comment above."""
    comments = dict(re.findall(r'^(\w+) = .*? # (.*)$', open(__file__, encoding='utf-8').read(), re.M))
    lines = [__doc__.strip(), '', 'hyperparameters and options (--name=value), with their defaults:']
    lines += [f"  {f'--{name}={v}':<26} {comments.get(name, '')}".rstrip() for name, v in HYPERPARAMETERS.items()]
    lines += ['', 'elsewhere than CUDA, the small configuration replaces the values still as the lecture has them:',
              '  ' + ' '.join(f'{k}={v}' for k, v in small.items()) + '  (--config=lecture keeps them)']
    return '\n'.join(lines)


def check_config(cfg):
    for name in ('batch_size', 'block_size', 'max_iters', 'eval_interval', 'eval_iters', 'n_embd', 'n_head',
                 'n_layer', 'bench_iters', 'learning_rate', 'temperature'):
        if cfg[name] <= 0:
            raise UsageError(f"--{name}={cfg[name]} must be positive")
    for name in ('max_new_tokens', 'warmup_iters', 'weight_decay', 'grad_clip', 'max_time', 'top_k'):
        if cfg[name] < 0:
            raise UsageError(f"--{name}={cfg[name]} must be 0 or more")
    for name in ('dropout', 'beta2'):
        if not 0 <= cfg[name] < 1:
            raise UsageError(f"--{name}={cfg[name]} must be in [0, 1)")
    if not 0 <= cfg['min_lr'] <= cfg['learning_rate']:
        raise UsageError(f"--min_lr={cfg['min_lr']} must be in [0, --learning_rate={cfg['learning_rate']}]")
    for name, choices in (('lr_decay', ('none', 'cosine', 'linear')), ('config', ('auto', 'lecture', 'small')),
                          ('dtype', ('auto', 'float32', 'bfloat16', 'float16'))):
        if cfg[name] not in choices:
            quoted = [repr(choice) for choice in choices]
            raise UsageError(f"--{name}={cfg[name]!r} must be {', '.join(quoted[:-1])} or {quoted[-1]}")
    if cfg['n_embd'] % cfg['n_head']:
        raise UsageError(f"--n_embd={cfg['n_embd']} must be divisible by --n_head={cfg['n_head']}")
    check_device(cfg['device'])
    if not os.path.isdir(os.path.dirname(os.path.abspath(cfg['ckpt_path']))):
        raise UsageError(f"--ckpt_path={cfg['ckpt_path']}: no such folder; make it first")


def check_device(device):
    kind, colon, index = device.partition(':')
    if kind not in ('cuda', 'mps', 'cpu') or colon and not index.isdigit():
        raise UsageError(f"--device={device!r} must be 'cuda', 'cuda:N', 'mps' or 'cpu'")
    have = torch.cuda.device_count() if kind == 'cuda' else kind == 'cpu' or torch.backends.mps.is_available()
    if int(index or 0) >= have:
        raise UsageError(f"--device={device} is not on this machine" + (
            f" (its GPUs: cuda:0 to cuda:{have - 1})" if kind == 'cuda' and have else "") + "; use --device=cpu")


def choose_config(cfg, given):
    """Applies the small configuration where it runs. Returns its name, and lines for the start of the run: the names
    it replaced, and those it did not because they were edited at the top of gpt.py."""
    which = cfg['config'] if cfg['config'] != 'auto' else 'lecture' if cfg['device'].startswith('cuda') else 'small'
    replaced, edited = [], []
    if which == 'small':
        for name, value in small.items():
            if name in given or value == LECTURE[name]:
                continue
            if cfg[name] == LECTURE[name]:
                cfg[name] = value
                replaced.append(name)
            else:
                edited.append(name)
    notes = []
    if replaced:
        line = next(i for i, l in enumerate(open(__file__, encoding='utf-8'), 1) if l.startswith('small = dict('))
        notes.append(f"on {cfg['device']}, the small configuration (gpt.py line {line}) replaced the lecture's "
                     f"{', '.join(replaced)}: the lecture's run takes about a day on a CPU (--config=lecture for it)")
    if edited:
        notes.append(f"as edited at the top of gpt.py: {' '.join(f'{k}={cfg[k]}' for k in edited)}")
    return which, notes


def choose_dtype(cfg):
    """The precision training computes in (cfg['dtype'] becomes its name), and why: bf16 on a GPU of compute capability
    8.0 or more, and on a CPU with AMX or AVX512-BF16 from n_embd 192 (where it measured faster); float16 with a
    GradScaler on older GPUs (T4, V100), which only emulate bf16; float32 elsewhere (there bf16 ran 3x slower)."""
    name, device = cfg['dtype'], cfg['device']
    why = 'as given'
    if device.startswith('cuda'):
        capability, native = '.'.join(map(str, torch.cuda.get_device_capability(device))), gpu_has_bf16(device)
        if name == 'bfloat16' and not native:
            raise UsageError(f"--dtype=bfloat16: this GPU (compute capability {capability}) only emulates bf16, "
                             "several times slower; use --dtype=float16 (or auto)")
        if name == 'auto':
            name = 'bfloat16' if native else 'float16'
            why = f"auto: compute capability {capability} {'has' if native else 'lacks'} bf16 tensor cores"
    elif device.startswith('mps') and name in ('float16', 'bfloat16'): # autocast fails there on some torch versions
        raise UsageError(f"--dtype={name} on MPS: autocast there fails on some torch versions; use --dtype=float32")
    elif name == 'auto':
        flag = device == 'cpu' and cfg['n_embd'] >= 192 and cpu_bf16()
        name, why = ('bfloat16', f'auto: a CPU with {flag}, n_embd 192 or more') if flag else \
            ('float32', f'auto on {device}')
    cfg['dtype'] = name
    return f"dtype={name} ({why})" + (", with a GradScaler" if name == 'float16' else "")


def gpu_has_bf16(device):
    """Compute capability 8.0 or more (A100, RTX 30xx and newer): bf16 tensor cores. torch.cuda.is_bf16_supported() says
    True on a T4 or V100 too, which only emulate it, several times slower."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def cpu_bf16():
    """This CPU's instructions for bf16 matrices as Linux lists them, amx_bf16 or avx512_bf16, or None."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read().split()
    except OSError: # not Linux
        return None
    return next((flag for flag in ('amx_bf16', 'avx512_bf16') if flag in flags), None)


# ------------
# data: Tiny Shakespeare, or any UTF-8 text

def load_text(path, url, block_size=0):
    """The training text; downloaded to path (atomically) if it is not there."""
    if not os.path.exists(path) and os.environ.get('RANK', '0') == '0':
        print(f"downloading {url} to {path}", flush=True)
        tmp = f"{path}.part{os.getpid()}"
        try:
            r = requests.get(url, timeout=30) # (a connection broken off is an error, not a shorter file)
            r.raise_for_status()
            with open(tmp, 'wb') as f:
                f.write(r.content)
            os.replace(tmp, path) # a whole file or none: never a half-written input.txt
        except (requests.RequestException, OSError) as e:
            raise UsageError(f"could not download {url} ({e.__class__.__name__}); "
                             f"download it by hand and save it as {path}, or pass --input_path=", status=1)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    if distributed(): # the others wait for rank 0's download
        torch.distributed.barrier()
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}; pass --input_path= with a UTF-8 text file", status=1)
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                         "convert it, or pass --input_path= with a UTF-8 file", status=1)
    if not text:
        raise UsageError(f"{path} is empty; pass --input_path= with some text", status=1)
    if len(text) - int(0.9 * len(text)) <= block_size:
        raise UsageError(f"{path} has {len(text)} characters, too few for --block_size={block_size}: its last 10% "
                         f"(the validation split) needs more than {block_size}; use a longer text or a smaller "
                         "--block_size", status=1)
    return text

# ------------
# the optimizer and its schedule

def configure_optimizer(model, learning_rate, weight_decay, beta2, exclude=()):
    """AdamW over every parameter but those in exclude (exercises/muon.py gives the blocks' matrices to Muon)."""
    left_out = {id(p) for p in exclude}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in left_out]
    # decay the matrices only: pulling biases and LayerNorm gains toward 0 does not regularise, it only biases
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    # fused: one kernel for all parameters, not several per tensor (a CPU's step at the small size: 8 ms to 2.5)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, beta2), fused=True)


def get_lr(it, c, done=0.0):
    """The rate for step it. done: the share of max_time behind us; the decay follows it where it is larger than the
    share of max_iters, so that the decay ends where the run does, whichever limit that is."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / c.warmup_iters
    if c.lr_decay == 'none':
        return c.learning_rate
    warm = c.warmup_iters / c.max_iters # the decay starts where the warmup ended
    progress = min(1.0, (max(done, it / c.max_iters) - warm) / (1 - warm))
    share = 1.0 - progress if c.lr_decay == 'linear' else 0.5 * (1.0 + math.cos(math.pi * progress))
    return c.min_lr + share * (c.learning_rate - c.min_lr)

# ------------
# the run: what train() calls

class Run:
    """Everything a training run does beyond the lecture's loop, in the order train() calls it."""

    def __init__(self, c, which, notes, ckpt, init=None):
        self.c, self.which, self.notes, self.ckpt, self.init = c, which, notes, ckpt, init
        self.rank, self.world_size = setup_distributed(c)
        self.master = self.rank == 0
        if not self.master: # only rank 0 prints and samples
            sys.stdout = open(os.devnull, 'w')
            c.max_new_tokens = 0
        elif hasattr(sys.stdout, 'reconfigure'):
            sys.stdout.reconfigure(line_buffering=True) # each step's line reaches a log as it is printed
        self.resumed_at = ckpt['iter'] if ckpt else None
        self.steps = self.resumed_at or 0
        self.last_iter = c.max_iters - 1 # moves up when max_time runs out
        self.spent = self.elapsed = ckpt.get('elapsed', 0.0) if ckpt else 0.0 # seconds of training before this run
        self.stopped_by = 'max_iters'
        self.best_val_loss = ckpt['best_val_loss'] if ckpt else float('inf')
        self.history = os.path.splitext(c.ckpt_path)[0] + '.csv'

    def begin(self, model, optimizer, chars):
        """Resume, speed-ups and several processes; returns the model to train and the step to start from."""
        c = self.c
        self.raw_model, self.optimizer, self.chars = model, optimizer, chars
        check_prompt(c.prompt, chars) # now, not after the training
        self.scaler = torch.amp.GradScaler(c.device.split(':')[0], enabled=c.dtype == 'float16')
        if self.ckpt:
            if self.ckpt['chars'] != chars:
                raise UsageError(f"{c.input_path} has another vocabulary than the checkpoint {c.ckpt_path}; resume "
                                 "with the text it was trained on, or start a run from its weights with --init_from=",
                                 status=1)
            model.load_state_dict(self.ckpt['model'])
            # the moments from the file, the settings (a --learning_rate given now) as this run has them
            settings = [{k: v for k, v in group.items() if k != 'params'} for group in optimizer.param_groups]
            try:
                optimizer.load_state_dict(self.ckpt['optimizer'])
            except (KeyError, ValueError):
                raise UsageError(f"{c.ckpt_path} holds another optimizer's state (exercises/muon.py's?): resume it "
                                 "with the script that trained it") from None
            for group, setting in zip(optimizer.param_groups, settings):
                group.update(setting)
            if self.ckpt.get('scaler') and c.dtype == 'float16':
                self.scaler.load_state_dict(self.ckpt['scaler'])
        if self.init:
            self.notes.append(init_weights(model, self.init, chars, c.init_from))
        if self.ckpt or self.rank:
            torch.manual_seed(c.seed + self.rank + self.steps) # each rank its own batches, a resumed run fresh ones
        model = speed_up(model, c, self.scaler, self.notes)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            model = DDP(model, device_ids=[int(c.device.split(':')[1])] if c.device.startswith('cuda') else None,
                        broadcast_buffers=False) # the only buffers are the constant causal masks
        # the first lines: which values run, and where they differ from the block at the top of gpt.py
        n = self.world_size
        head = (f"config {'resumed' if self.ckpt else self.which} on {c.device}{f' x {n} processes' if n > 1 else ''}: "
                f"n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} block_size={c.block_size} batch_size="
                f"{c.batch_size}{f' per rank, {c.batch_size * n} in all' if n > 1 else ''} max_iters={c.max_iters} "
                f"learning_rate={c.learning_rate:g}" + (f" max_time={c.max_time:g}s" if c.max_time > 0 else ""))
        if self.ckpt:
            head += f", from step {self.steps} of {c.ckpt_path}" + (
                f"; {self.spent:.1f} s of it spent before" if c.max_time > 0 else "")
        print(head, *self.notes, sep='\n  ', flush=True)
        self.tokens_per_iter = c.batch_size * c.block_size * self.world_size
        if c.bench: # bench_iters steps after two to warm up (allocator, kernels, compilation): see after_step
            self.resumed_at, self.last_iter = self.steps, math.inf # no evaluation where it starts, nor at the end
            c.max_iters, c.eval_interval, c.max_new_tokens = self.steps + 2 + c.bench_iters, 10**9, 0
            return model, self.steps
        if self.master and (not self.ckpt or not os.path.exists(self.history)): # a resumed run appends to its own
            with open(self.history, 'w') as f:
                f.write('step,train_loss,val_loss,elapsed_s\n')
        # Ctrl-C finishes the step under way, then saves; a second Ctrl-C stops at once
        self.stop_requested = False
        self.old_handler = signal.signal(signal.SIGINT, self.request_stop)
        self.t0 = self.shown = time.time()
        self.speed_from = (self.t0, self.steps) # progress lines: the speed since then
        self.every = 10 if sys.stderr.isatty() else PROGRESS_EVERY # seconds between them (a log gets fewer)
        return model, self.steps

    def request_stop(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def after_eval(self, iter, losses):
        """Appends to the history, saves a better checkpoint."""
        if self.master:
            with open(self.history, 'a') as f:
                f.write(f"{iter},{losses['train']:.4f},{losses['val']:.4f},{time.time() - self.t0:.1f}\n")
            if losses['val'] < self.best_val_loss:
                self.best_val_loss = losses['val']
                if iter > (self.resumed_at or 0):
                    self.save(iter)
        self.speed_from = (time.time(), iter) # the evaluation's time does not count as training speed

    def before_update(self, iter):
        c = self.c
        done = self.elapsed / c.max_time if c.max_time > 0 else 0.0
        for group in self.optimizer.param_groups:
            group['lr'] = get_lr(iter, c, done) * group.get('lr_scale', 1.0) # a group's share (exercises/muon.py)
        if self.scaler.is_enabled(): # float16: the gradients of the scaled loss, divided back before clipping
            self.scaler.unscale_(self.optimizer)
        if c.grad_clip > 0 or self.scaler.is_enabled(): # (max_norm inf: the norm alone)
            norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), c.grad_clip or math.inf)
        if self.scaler.is_enabled():
            self.scaler.update() # half the scale after an overflow, twice after 2000 steps without one
            if not torch.isfinite(norm): # an overflow: no gradient, no step (what scaler.step would skip)
                self.optimizer.zero_grad(set_to_none=True)

    def after_step(self, iter, loss):
        """The progress line; Ctrl-C saves and stops; True after the last step."""
        c = self.c
        if c.bench:
            if c.device != 'cpu': # wait for the GPU: its steps done, not only queued
                torch.cuda.synchronize(c.device) if c.device.startswith('cuda') else torch.mps.synchronize()
            if iter == self.resumed_at + 1:
                self.t0 = time.perf_counter()
            return iter == c.max_iters - 1
        self.steps = iter + 1
        self.elapsed = self.spent + time.time() - self.t0
        stop = self.stop_requested
        if self.world_size > 1: # any rank's Ctrl-C, and rank 0's clock: every rank stops at the same step
            t = torch.tensor([float(stop), self.elapsed if self.master else 0.0], device=c.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            stop, self.elapsed = t[0].item() > 0, t[1].item()
        if c.max_time > 0 and self.elapsed >= c.max_time and self.last_iter > iter + 1:
            self.last_iter, self.stopped_by = iter + 1, 'max_time' # one more evaluation and step, as at max_iters
        now = time.time()
        if self.master and now - self.shown >= self.every and self.steps > self.speed_from[1]:
            self.shown, its = now, (self.steps - self.speed_from[1]) / (now - self.speed_from[0])
            left = min((c.max_iters - self.steps) / its, c.max_time - self.elapsed if c.max_time > 0 else math.inf)
            print(f"step {self.steps}/{c.max_iters} | loss {loss.item():.4f} | {its:.2f} it/s | "
                  f"{its * self.tokens_per_iter / 1000:.1f}k tok/s | {int(left // 60)}m{int(left % 60):02d}s left",
                  file=sys.stderr, flush=True)
        if stop:
            if self.master:
                self.save(self.steps)
                where = '' if self.c.ckpt_path == ckpt_path else f' --ckpt_path={self.c.ckpt_path}'
                print(f"interrupted at step {self.steps}: saved {self.c.ckpt_path}; continue with 'python gpt.py "
                      f"--resume{where}' or sample with 'python gpt.py --sample{where}'", file=sys.stderr)
            raise SystemExit(130)
        return iter >= self.last_iter

    def end(self, val_data):
        c = self.c
        if c.bench: # the time since the second step, synchronised at the last
            dt = (time.perf_counter() - self.t0) / c.bench_iters
            print(f"bench: {dt * 1000:.1f} ms/iter | {self.tokens_per_iter / dt / 1000:.1f}k tok/s")
            return
        signal.signal(signal.SIGINT, self.old_handler)
        slow_down(self.raw_model) # what follows runs part one's code in float32, as --sample does
        if self.master:
            self.save(self.steps)
            print(f"trained in {time.time() - self.t0:.1f} s, {self.steps} steps ({self.stopped_by} reached); "
                  f"saved {c.ckpt_path} and {self.history}")
            plot_history(self.history)
            # estimate_loss's random batches stray from it by up to 0.02: this is the number to compare runs by
            n = (len(val_data) - 1) // c.block_size
            print(f"val loss on the whole val split ({n} windows of {c.block_size} characters): "
                  f"{whole_split_loss(self.raw_model, val_data, c.block_size):.4f}")
        torch.manual_seed(c.seed) # the sample that follows is the one --sample draws from the checkpoint

    def save(self, iter):
        save_checkpoint(self.c.ckpt_path, self.raw_model, self.optimizer, self.c, self.chars, iter, self.best_val_loss,
                        self.spent + time.time() - self.t0, self.scaler)


@torch.no_grad()
def whole_split_loss(model, data, block_size):
    """The mean loss over every character of the split, read in windows of block_size, side by side."""
    n = (len(data) - 1) // block_size
    x, y = data[:n * block_size].view(n, block_size), data[1:n * block_size + 1].view(n, block_size)
    training, device = model.training, next(model.parameters()).device
    model.eval()
    per = max(1, 2**17 // block_size) # windows at a time: their logits take 34 MB at the small size
    total = sum(model(x[i:i + per].to(device), y[i:i + per].to(device))[1].item() * len(x[i:i + per])
                for i in range(0, n, per))
    model.train(training)
    return total / n


def plot_history(history):
    """A PNG of the loss curves beside the CSV, where matplotlib happens to be installed."""
    try:
        import matplotlib
        matplotlib.use('Agg') # a file, no window
        import matplotlib.pyplot as plt
    except ImportError:
        return
    step, train, val = np.loadtxt(history, delimiter=',', skiprows=1, usecols=(0, 1, 2), ndmin=2).T
    plt.figure(figsize=(6, 4))
    plt.plot(step, train, label='train')
    plt.plot(step, val, label='val')
    plt.xlabel('step'); plt.ylabel('loss'); plt.legend(); plt.grid(alpha=0.3)
    plt.savefig(os.path.splitext(history)[0] + '.png', dpi=100, bbox_inches='tight')
    plt.close()

# ------------
# speed: the same model, computed faster

def speed_up(model, c, scaler, notes):
    """The model to train: attention by a fused kernel, autocast to c.dtype, torch.compile. Each computes what part one
    says; a MultiHeadAttention edited in part one runs as written (notes, the run's first lines, say so)."""
    torch.set_float32_matmul_precision('high') # TF32 matmuls on GPUs that have them
    as_shipped = fingerprint(MultiHeadAttention) == SHIPPED_ATTENTION
    for module in model.modules():
        if type(module) is MultiHeadAttention and as_shipped:
            module.__class__ = FusedAttention
    if not as_shipped:
        notes.append("MultiHeadAttention is edited: it runs as written, without the fused kernel")
    if c.compile:
        model = torch.compile(model)
    return Autocast(model, c.device, getattr(torch, c.dtype), scaler) if c.dtype != 'float32' else model


def slow_down(model):
    """speed_up undone: part one's attention, matmuls in full float32 (not TF32)."""
    torch.set_float32_matmul_precision('highest')
    for module in model.modules():
        if type(module) is FusedAttention:
            module.__class__ = MultiHeadAttention


def fingerprint(cls):
    """A hash of a class's code, its comments and layout left out: what tells an edited MultiHeadAttention."""
    try:
        source = inspect.getsource(cls) # (a class at the top level: no indent to take away)
    except (OSError, TypeError): # no source to read: take it as edited
        return None
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    code = ' '.join(t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skip)
    return hashlib.sha256(code.encode()).hexdigest()[:16]


class FusedAttention(MultiHeadAttention):
    """ MultiHeadAttention as shipped, in one fused kernel (flash attention on a GPU): the same weights, read the same
    way; the kernel computes softmax(q @ k^T * hs**-0.5, causal mask) @ v, dropout included """

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = [t.view(B, T, self.num_heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1)] # (B,nh,T,hs)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.attn_dropout.p if self.training else 0.0)
        return self.dropout(self.proj(out.transpose(1, 2).reshape(B, T, C)))


class Autocast(nn.Module):
    """ The model's forward under autocast (training and evaluation; sampling runs the model itself, in fp32) """

    def __init__(self, model, device, dtype, scaler):
        super().__init__()
        self.model, self.device_type, self.dtype, self.scaler = model, device.split(':')[0], dtype, scaler

    def forward(self, *args):
        with torch.autocast(self.device_type, dtype=self.dtype):
            logits, loss = self.model(*args)
        if self.scaler.is_enabled() and loss is not None and loss.requires_grad:
            # loss.backward() starts from loss * scale, as scaler.scale(loss).backward() would: float16's small
            # gradients stay above its smallest number; Run.before_update divides them back
            loss.register_hook(self.scaler.scale)
        return logits, loss


# ------------
# several processes (torchrun): one rank per GPU, or per CPU process with gloo

def setup_distributed(c):
    """(rank, world_size); joins the process group when torchrun's environment is present."""
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return 0, 1
    import torch.distributed as dist
    # imported before the process group exists, not by DDP after it: its functions' defaults (group=group.WORLD) would
    # hold the process group for good, destroy_process_group could not free it, and its threads would outlive us
    import torch.distributed.nn.functional
    rank, local_rank, world_size = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', 0)), int(os.environ['WORLD_SIZE'])
    if c.device.startswith('mps'):
        raise UsageError("torchrun on MPS: gloo, its only backend there, cannot carry MPS tensors; run one process "
                         "(python gpt.py), or pass --device=cpu")
    if c.device.startswith('cuda'):
        c.device = f'cuda:{local_rank}'
        torch.cuda.set_device(local_rank)
    dist.init_process_group('nccl' if c.device.startswith('cuda') else 'gloo')
    return rank, world_size


def teardown_distributed():
    """Frees the process group while Python is fully alive: a gloo thread that lets go of an all-reduce after the
    interpreter began to shut down cannot take the GIL, and the process aborts (torch 2.13, pytorch/pytorch#179291)."""
    if distributed():
        gc.collect() # the DDP wrapper and its reducer hold the process group: let them go first
        torch.distributed.destroy_process_group() # the last reference: its destructor joins the threads


def distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


# ------------
# checkpoints

def save_checkpoint(path, model, optimizer, c, chars, iter, best_val_loss, elapsed=0.0, scaler=None):
    save_atomically(path, {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'config': vars(c),
                           'chars': chars, 'iter': iter, 'best_val_loss': best_val_loss, 'elapsed': elapsed,
                           'scaler': scaler and scaler.state_dict()})


def save_atomically(path, obj):
    """torch.save(obj, path), all or nothing: a kill, a full disk or a file held open elsewhere leaves what was there
    (and a failure is one line); for the exercises' checkpoints too."""
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
            f"{'free some space, or ' if e.errno in (errno.ENOSPC, errno.EFBIG) else ''}pass another --ckpt_path="),
            status=1)
    finally:
        if os.path.exists(tmp) and not written:
            os.remove(tmp)


def load_checkpoint(path, option='ckpt_path'):
    """The checkpoint at path, given as --option; a missing or unreadable file is a one-line error."""
    if not os.path.exists(path):
        raise UsageError(f"no checkpoint at {path}: train one first with 'python gpt.py', or pass --{option}=",
                         status=1)
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True) # a GPU checkpoint loads on any machine
        assert isinstance(ckpt, dict) and {'model', 'config', 'chars', 'iter', 'best_val_loss'} <= ckpt.keys()
    except Exception as e:
        raise UsageError(f"{path} is not a readable gpt.py checkpoint ({e.__class__.__name__}): it may be truncated "
                         f"or something else; retrain with 'python gpt.py' or pass --{option}=", status=1)
    return ckpt


def apply_checkpoint_config(cfg, given, ckpt, keys, option='ckpt_path'):
    """The checkpoint's values for keys, except those given on the command line; a different shape is an error."""
    for name in keys:
        saved = ckpt['config'][name]
        if name in given and cfg[name] != saved and name in SHAPE: # the weights fit no other
            raise UsageError(f"the checkpoint {cfg[option]} has {name}={saved}, not --{name}={cfg[name]}; "
                             f"drop --{name}, or pass another --{option}=")
        if name not in given:
            cfg[name] = saved


def init_weights(model, init, chars, path):
    """--init_from: the checkpoint's weights, each character's rows (token embedding, lm_head) found by the character,
    not its index: the new text's vocabulary is sorted afresh. A character the checkpoint never saw keeps the rows of a
    fresh model; one the new text lacks is dropped. Returns the line that says so."""
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


def check_budget_left(cfg, ckpt):
    """--resume of a run that has reached a limit: one line with what to give, not a step or two of training."""
    spent, done = ckpt.get('elapsed', 0.0), []
    if ckpt['iter'] >= cfg['max_iters']:
        done.append((f"step {ckpt['iter']} of --max_iters={cfg['max_iters']}", f"--max_iters={ckpt['iter'] * 2}"))
    if 0 < cfg['max_time'] <= spent:
        done.append((f"{spent:.0f} s of --max_time={cfg['max_time']:g}", f"--max_time={spent + cfg['max_time']:.0f}"))
    if done:
        raise UsageError(f"{cfg['ckpt_path']} has reached {' and '.join(d for d, _ in done)}: to train on, give a "
                         f"larger budget, e.g. --resume {' '.join(g for _, g in done)}")


def sample_from_checkpoint(cfg, given):
    ckpt = load_checkpoint(cfg['ckpt_path'])
    apply_checkpoint_config(cfg, given, ckpt, SHAPE)
    check_config(cfg)
    check_prompt(cfg['prompt'], ckpt['chars'])
    encode, decode = tokenizer(ckpt['chars'])
    model = GPTLanguageModel(len(ckpt['chars']), cfg['block_size'], cfg['n_embd'], cfg['n_head'], cfg['n_layer'])
    model.load_state_dict(ckpt['model'])
    model.to(cfg['device']).eval()
    torch.manual_seed(cfg['seed'])
    # the same lines as the sample at the end of train(): the prompt, or the lecture's token 0 (a newline here)
    context = torch.tensor([encode(cfg['prompt'])] if cfg['prompt'] else [[0]], dtype=torch.long)
    print(decode(model.generate(context.to(cfg['device']), cfg['max_new_tokens'], cfg['temperature'],
                                cfg['top_k'])[0].tolist()))


def check_prompt(prompt, chars):
    unknown = sorted(set(prompt) - set(chars))
    if unknown:
        raise UsageError(f"--prompt has characters the model never saw: {''.join(unknown)!r}; "
                         "use only characters of the text it was trained on")

# ------------
# the command

RECIPE = SHAPE + ('batch_size', 'max_iters', 'eval_interval', 'eval_iters', 'dropout', 'learning_rate', 'warmup_iters',
                  'lr_decay', 'min_lr', 'beta2', 'weight_decay', 'grad_clip', 'max_time', 'seed') # --resume carries


def main(argv):
    if '-h' in argv or '--help' in argv:
        return print(usage())
    cfg, given = parse_args(argv)
    if cfg['sample']:
        return sample_from_checkpoint(cfg, given)
    ckpt, init, which, notes = None, None, None, []
    if cfg['resume']: # the run carries on as it started: its shape and recipe, unless given here
        if cfg['init_from']:
            raise UsageError("--init_from starts a new run from a checkpoint's weights, --resume carries one on: "
                             "give one of them")
        ckpt = load_checkpoint(cfg['ckpt_path'])
        apply_checkpoint_config(cfg, given, ckpt, RECIPE)
        check_budget_left(cfg, ckpt)
    else:
        which, notes = choose_config(cfg, given | set(SHAPE) if cfg['init_from'] else given) # the shape: below
    if cfg['init_from']: # a new run, its own recipe; the weights, hence the shape, from the checkpoint
        if os.path.abspath(cfg['init_from']) == os.path.abspath(cfg['ckpt_path']):
            raise UsageError(f"--init_from={cfg['init_from']} is also --ckpt_path: this run would write over the "
                             "checkpoint it starts from; pass another --ckpt_path=")
        init = load_checkpoint(cfg['init_from'], 'init_from')
        apply_checkpoint_config(cfg, given, init, SHAPE, 'init_from')
        if 'learning_rate' not in given: # the lecture's advice for a finetune; half did best here (README, EX3)
            cfg['learning_rate'] /= 2
            notes.append(f"learning_rate={cfg['learning_rate']:g}: half, to finetune (or give --learning_rate=)")
    check_config(cfg)
    notes.append(choose_dtype(cfg)) # the device's, on every run: not carried by --resume
    c = SimpleNamespace(**cfg)
    run = Run(c, which, notes, ckpt, init)
    try:
        train(c, run)
    except BaseException as e:
        traceback.clear_frames(e.__traceback__) # its frames hold the DDP wrapper: let teardown_distributed free it
        raise
    finally:
        teardown_distributed()


def run_command(main, script='gpt.py'):
    """main(sys.argv[1:]), with what the user did wrong as one line and the status to match; for the exercises too."""
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


if __name__ == '__main__':
    run_command(main)
