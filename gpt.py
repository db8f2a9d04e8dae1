"""
gpt.py: the decoder-only transformer of "Let's build GPT: from scratch, in code,
spelled out", trained on Tiny Shakespeare. Reads top to bottom like the lecture:
hyperparameters, data, model, training, sampling.

    python gpt.py                                   train (lecture's run on CUDA, a smaller one elsewhere)
    python gpt.py --max_iters=2000 --n_layer=4      any hyperparameter below as --name=value
    python gpt.py --resume                          carry on from the checkpoint
    python gpt.py --sample --prompt="ROMEO:"        sample from the checkpoint
    torchrun --standalone --nproc_per_node=8 gpt.py several GPUs (DDP)
"""
import ctypes
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import requests
import torch
import torch.nn as nn
from torch.nn import functional as F

# hyperparameters: the lecture's run (about 15 minutes on an A100; used on CUDA)
batch_size = 64 # how many independent sequences will we process in parallel?
block_size = 256 # what is the maximum context length for predictions?
max_iters = 5000
eval_interval = 500
learning_rate = 3e-4
eval_iters = 200
n_embd = 384
n_head = 6
n_layer = 6
dropout = 0.2
# the training recipe beyond the lecture; these defaults are the lecture's own (constant lr, AdamW's betas)
warmup_iters = 0 # linear warmup from 0 to learning_rate over this many steps
lr_decay = 'none' # 'none' (a constant rate), 'cosine' or 'linear': from learning_rate down to min_lr by max_iters
min_lr = 0.0
beta2 = 0.999
weight_decay = 0.01 # AdamW's default, on the weight matrices and embeddings only (not biases, not LayerNorm)
grad_clip = 0.0 # clip the gradient norm to this when > 0
# the lecture's run takes about a day on a laptop CPU: elsewhere than CUDA these replace the values above
# (each change measured in the README), unless given on the command line
small = dict(
    n_layer=4, n_head=4, n_embd=128, # 0.82M parameters: in a fixed time a smaller model taking more steps ends lower
    block_size=128, # half the lecture's context: attention costs half as much per token, little worse for characters
    batch_size=16, # more, smaller steps: a small model early in training learns more per token from them
    max_iters=4700, # about 9.5 minutes for the whole run on a fast 2-core CPU
    eval_interval=1000, # evaluations cost time that training could use
    eval_iters=50,
    dropout=0.0, # a short run is limited by its steps, not by overfitting: 0.1 gave val 1.559, not 1.504
    learning_rate=2e-3, # a small model trained briefly takes a larger step
    warmup_iters=100, # ...which needs a gentle start
    lr_decay='linear', # the last steps refine instead of bouncing around...
    min_lr=0.0, # ...all the way down: val 1.561, not 1.573 with cosine to 2e-4 (whole val split, n_embd 192)
    beta2=0.99, # few steps: Adam's second moment follows the gradients faster
    weight_decay=0.1,
    grad_clip=1.0, # a bad batch cannot throw the large step off course
)
config = 'auto' # 'lecture', 'small', or 'auto': lecture on CUDA, small elsewhere
device = '' # 'cuda', 'mps' or 'cpu'; '' picks the first one available
compile = False # torch.compile the model (on CUDA; it did not help on a CPU)
seed = 1337
input_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'input.txt')
data_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
ckpt_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gpt.pt')
resume = False # continue training from ckpt_path
target_loss = 0.0 # when > 0, stop as soon as an evaluation's val loss is this low or lower
bench = False # time bench_iters training steps and report tokens/s and MFU; no evaluation, no checkpoint
bench_iters = 10
# sampling
sample = False # only sample from the checkpoint at ckpt_path (no training, no input.txt)
prompt = ''
max_new_tokens = 500
temperature = 1.0
top_k = 0 # sample from the k likeliest characters only; 0: no cutoff
# ------------

HYPERPARAMETERS = {k: v for k, v in globals().items() if not k.startswith('_') and type(v) in (bool, int, float, str)}
SHAPE = ('block_size', 'n_embd', 'n_head', 'n_layer') # with the vocabulary, what a checkpoint's weights need


class UsageError(Exception):
    """Bad input from the user: reported as one line, no traceback."""
    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def parse_args(argv):
    """--name=value for every hyperparameter, typed by its default. Returns (values, names given)."""
    cfg, given = dict(HYPERPARAMETERS), set()
    valid = 'valid names: ' + ', '.join(HYPERPARAMETERS)
    for arg in argv:
        name, eq, value = arg[2:].partition('=') if arg.startswith('--') else (arg, '', '')
        if name not in HYPERPARAMETERS:
            raise UsageError(f"unknown hyperparameter {arg!r}; {valid}")
        default = HYPERPARAMETERS[name]
        try:
            if type(default) is bool: # --sample alone means --sample=True
                cfg[name] = {'true': True, '1': True, 'false': False, '0': False}[value.lower() if eq else 'true']
            else:
                cfg[name] = type(default)(value)
        except (KeyError, ValueError):
            raise UsageError(f"bad value {value!r} for --{name}: expected {type(default).__name__} like {default!r}; {valid}")
        given.add(name)
    return cfg, given


def check_config(cfg):
    for name in ('batch_size', 'block_size', 'max_iters', 'eval_interval', 'eval_iters', 'n_embd', 'n_head',
                 'n_layer', 'bench_iters'):
        if cfg[name] <= 0:
            raise UsageError(f"--{name}={cfg[name]} must be positive")
    if cfg['n_embd'] % cfg['n_head']:
        raise UsageError(f"--n_embd={cfg['n_embd']} must be divisible by --n_head={cfg['n_head']}")
    if not 0 <= cfg['dropout'] < 1:
        raise UsageError(f"--dropout={cfg['dropout']} must be in [0, 1)")
    if cfg['learning_rate'] <= 0:
        raise UsageError(f"--learning_rate={cfg['learning_rate']} must be positive")
    if cfg['temperature'] <= 0:
        raise UsageError(f"--temperature={cfg['temperature']} must be positive")
    if cfg['top_k'] < 0:
        raise UsageError(f"--top_k={cfg['top_k']} must be 0 (no cutoff) or positive")
    if cfg['max_new_tokens'] < 0:
        raise UsageError(f"--max_new_tokens={cfg['max_new_tokens']} must be 0 or more")
    if cfg['lr_decay'] not in ('none', 'cosine', 'linear'):
        raise UsageError(f"--lr_decay={cfg['lr_decay']!r} must be 'none', 'cosine' or 'linear'")
    if not 0 <= cfg['min_lr'] <= cfg['learning_rate']:
        raise UsageError(f"--min_lr={cfg['min_lr']} must be in [0, --learning_rate={cfg['learning_rate']}]")
    if cfg['config'] not in ('auto', 'lecture', 'small'):
        raise UsageError(f"--config={cfg['config']!r} must be 'auto', 'lecture' or 'small'")


def pick_device(name):
    if not name:
        return 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    if name.startswith('cuda') and not torch.cuda.is_available() or name == 'mps' and not torch.backends.mps.is_available():
        raise UsageError(f"--device={name} is not available on this machine; use --device=cpu")
    if name.split(':')[0] not in ('cuda', 'mps', 'cpu'):
        raise UsageError(f"--device={name!r} must be 'cuda', 'mps' or 'cpu'")
    return name

# ------------
# data: Tiny Shakespeare, or any UTF-8 text

def load_text(path, url, is_master=True):
    """The training text; downloaded to path (atomically) if it is not there."""
    if not os.path.exists(path) and is_master:
        print(f"downloading {url} to {path}", flush=True)
        tmp = f"{path}.part{os.getpid()}"
        try:
            r = requests.get(url, timeout=30)
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
    barrier() # in a multi-process run, the others wait for rank 0's download
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
    return text


def tokenizer(chars):
    # a character-level tokenizer: each character of the vocabulary is one integer
    stoi = { ch:i for i,ch in enumerate(chars) }
    itos = { i:ch for i,ch in enumerate(chars) }
    encode = lambda s: [stoi[c] for c in s] # encoder: take a string, output a list of integers
    decode = lambda l: ''.join([itos[i] for i in l]) # decoder: take a list of integers, output a string
    return encode, decode


def split_data(text, encode, block_size, path='the text'):
    # train and test splits
    data = torch.tensor(encode(text), dtype=torch.long)
    n = int(0.9*len(data)) # first 90% will be train, rest val
    train_data, val_data = data[:n], data[n:]
    if len(val_data) <= block_size:
        raise UsageError(f"{path} has {len(text)} characters, too few for --block_size={block_size}: its last 10% "
                         f"(the validation split) needs more than {block_size}; use a longer text or a smaller "
                         "--block_size", status=1)
    return train_data, val_data


def get_batch(data, batch_size, block_size, device):
    # a small batch of inputs x and targets y: y is x shifted one character to the left
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i:i+block_size] for i in ix])
    y = torch.stack([data[i+1:i+block_size+1] for i in ix])
    if device.startswith('cuda'): # pinned memory lets the copy overlap with the GPU's work
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device, ctx=nullcontext()):
    """Mean loss over eval_iters batches of each split: far less noisy than one batch's loss."""
    out = {}
    model.eval()
    for name, data in splits.items():
        losses = torch.zeros(eval_iters, device=device)
        for k in range(eval_iters):
            X, Y = get_batch(data, batch_size, block_size, device)
            with ctx:
                logits, loss = model(X, Y)
            losses[k] = loss
        out[name] = all_mean(losses.mean()).item()
    model.train()
    return out

# ------------
# model

class Dropout(nn.Module):
    """ nn.Dropout, with a cheaper random mask on a CPU """

    def __init__(self, p):
        super().__init__()
        self.p = p
        # 16 random bits decide each element: it is dropped with probability cut/65536, p to within 1/131072
        self.cut = round(p * 65536)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != 'cpu': # a GPU has a fused dropout kernel
            return F.dropout(x, self.p, training=True)
        # nn.Dropout draws one random number per element, which on a CPU took a sixth of the lecture's training step;
        # one 64-bit draw gives four elements their 16 bits each
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None).view(torch.int16)[:n].view(x.shape)
        keep = bits >= self.cut - 32768 # uniform over [-32768, 32767]: true with probability 1 - cut/65536
        # the kept elements are scaled up so that the expected value stays x, as in nn.Dropout
        return x * torch.where(keep, 65536 / (65536 - self.cut), 0.0)


class Head(nn.Module):
    """ one head of self-attention (the lecture's version 4; MultiHeadAttention does all heads at once) """

    def __init__(self, n_embd, head_size, block_size, dropout):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # input of size (batch, time-step, channels), output of size (batch, time-step, head size)
        B,T,C = x.shape
        k = self.key(x)   # (B,T,hs)
        q = self.query(x) # (B,T,hs)
        # attention scores ("affinities"), scaled by head_size (not C, the lecture's correction) to keep unit variance
        wei = q @ k.transpose(-2,-1) * k.shape[-1]**-0.5 # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf')) # (B, T, T): tokens from the future cannot communicate
        wei = F.softmax(wei, dim=-1) # (B, T, T)
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        v = self.value(x) # (B,T,hs)
        out = wei @ v # (B, T, T) @ (B, T, hs) -> (B, T, hs)
        return out


class MultiHeadAttention(nn.Module):
    """ multiple heads of self-attention in parallel, the heads batched like the batch dimension (exercise 1) """

    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False) # query, key, value of every head in one matmul
        self.proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = Dropout(dropout) # on the attention weights, as in Head
        self.dropout = Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2) # (B,T,C) each
        # the heads become a batch dimension: (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.training and self.attn_dropout.p > 0 and x.device.type == 'cpu':
            # written out as in Head: on a CPU the fused kernel cannot drop attention weights, and its fallback is slower
            # than this. The scale goes on q and the mask is added: fewer passes over the large (T,T) scores
            wei = (q * k.size(-1)**-0.5) @ k.transpose(-2, -1) # (B, nh, T, hs) @ (B, nh, hs, T) -> (B, nh, T, T)
            wei = wei + torch.full((T, T), float('-inf'), device=x.device).triu(1) # the future gets weight 0
            wei = self.attn_dropout(F.softmax(wei, dim=-1))
            out = wei @ v # (B, nh, T, T) @ (B, nh, T, hs) -> (B, nh, T, hs)
        else:
            # softmax(q @ k^T * hs**-0.5, causal mask) @ v by a fused kernel (flash attention on a GPU)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                 dropout_p=self.attn_dropout.p if self.training else 0.0) # (B, nh, T, hs)
        out = out.transpose(1, 2).contiguous().view(B, T, C) # the heads side by side again
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
            Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """ Transformer block: communication followed by computation """

    def __init__(self, n_embd, n_head, dropout):
        # n_embd: embedding dimension, n_head: the number of heads we'd like
        super().__init__()
        self.sa = MultiHeadAttention(n_embd, n_head, dropout)
        self.ffwd = FeedForward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x)) # residual connections: gradients flow straight to the input
        x = x + self.ffwd(self.ln2(x))
        return x


class GPTLanguageModel(nn.Module):

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        # each token directly reads off the logits for the next token from a lookup table
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd) # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)
        # better init, added to the lecture's repo after the video
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
            # crop idx to the last block_size tokens: there are no position embeddings beyond
            idx_cond = idx[:, -self.block_size:]
            # get the predictions
            logits, loss = self(idx_cond)
            # focus only on the last time step, sharpened or flattened by the temperature
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


def configure_optimizer(model, learning_rate, weight_decay, beta2, device):
    # decay the matrices only: pulling biases and LayerNorm gains toward 0 does not regularise, it only biases
    decay = [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]
    no_decay = [p for p in model.parameters() if p.dim() < 2 and p.requires_grad]
    groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]
    # fused: one kernel for all parameters instead of several per tensor (on a CPU since torch 2.4: the small model's
    # optimizer step went from 8 ms to 2.5, the lecture's from 75 ms to 16)
    fused = device.split(':')[0] in ('cuda', 'cpu')
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, beta2), fused=fused)


def get_lr(it, cfg):
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    if cfg.lr_decay == 'none':
        return cfg.learning_rate
    progress = min(1.0, (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters))
    share = 1.0 - progress if cfg.lr_decay == 'linear' else 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr + share * (cfg.learning_rate - cfg.min_lr)


def flops_per_iter(model, batch_size, block_size):
    # 6 flops per weight per token (forward 2, backward 4), plus the attention's q @ k^T and wei @ v
    n_layer, n_embd = len(model.blocks), model.lm_head.in_features
    n_weights = sum(p.numel() for p in model.parameters()) - model.token_embedding_table.weight.numel() \
        - model.position_embedding_table.weight.numel() # lookups, not matmuls
    return 6 * n_weights * batch_size * block_size + 12 * n_layer * batch_size * block_size**2 * n_embd


def measure_peak_flops(device, dtype):
    """The best matmul rate of this device in this dtype, measured now (the denominator of MFU)."""
    n, reps = (8192, 5) if device.startswith('cuda') else (2048, 1)
    g = torch.Generator(device).manual_seed(0) # not the global one: measuring must not change the run's batches
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    best = float('inf')
    for _ in range(4):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def keep_freed_memory():
    """On Linux, glibc gives every freed block over 32 MB back to the system, so each training step on a CPU asks for
    its activations afresh and the kernel zeroes them page by page: a fifth of the lecture's step. Keep them instead."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-4, 0) # M_MMAP_MAX: serve no block by mmap, so none goes back when freed...
        libc.mallopt(-1, 2**31 - 1) # M_TRIM_THRESHOLD: ...and keep the freed top of the heap
    except (OSError, AttributeError): # another system or C library: nothing to do
        pass


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    elif device == 'mps':
        torch.mps.synchronize()

# ------------
# several processes (torchrun): one rank per GPU, or per CPU process with gloo

def setup_distributed(device='cpu'):
    """(rank, local_rank, world_size); joins the process group when torchrun's environment is present."""
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return 0, 0, 1
    import datetime
    import torch.distributed as dist
    rank, local_rank, world_size = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', 0)), int(os.environ['WORLD_SIZE'])
    backend = 'nccl' if device.startswith('cuda') else 'gloo_one_worker'
    if backend == 'nccl':
        torch.cuda.set_device(local_rank)
    elif backend not in dist.Backend.backend_list:
        dist.Backend.register_backend(backend, gloo_one_worker, devices=['cpu'])
    # a rank that dies or hangs makes the others fail after this long instead of waiting forever
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return rank, local_rank, world_size


def gloo_one_worker(store, rank, world_size, timeout):
    """Gloo with one worker thread instead of two, so that teardown_distributed can know all its work is released.
    A worker thread drops its last reference to a finished all-reduce some time after the result is out. The ones that
    DDP starts inside loss.backward() hold a Python object (the context backward keeps in thread-local state), so the
    worker needs the GIL for that; if the interpreter has begun to shut down, it cannot have it and the process aborts
    with 'terminate called without an active exception' (torch 2.13; pytorch/pytorch#190489, and #179291 on why
    destroy_process_group does not help: the process group outlives it). One worker runs the collectives in order and
    releases each before it starts the next."""
    from torch.distributed import ProcessGroupGloo
    options = ProcessGroupGloo._Options()
    options._devices = [ProcessGroupGloo.create_default_device()]
    options._threads = 1
    options._timeout = timeout
    return ProcessGroupGloo(store, rank, world_size, options)


def teardown_distributed(wait=True):
    if distributed():
        if wait:
            torch.distributed.barrier() # with one gloo worker, every earlier collective is released when this returns
        torch.distributed.destroy_process_group()


def distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def barrier():
    if distributed():
        torch.distributed.barrier()


def all_mean(t):
    if distributed():
        t = t.clone()
        torch.distributed.all_reduce(t)
        t /= torch.distributed.get_world_size()
    return t

# ------------
# checkpoints

def save_checkpoint(path, model, optimizer, cfg, chars, iter, best_val_loss):
    ckpt = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'config': vars(cfg),
            'chars': chars, 'iter': iter, 'best_val_loss': best_val_loss}
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(ckpt, tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path) # atomic: a kill at any moment leaves the old checkpoint or the new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path):
    if not os.path.exists(path):
        raise UsageError(f"no checkpoint at {path}: train one first with 'python gpt.py', or pass --ckpt_path=", status=1)
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True) # a GPU checkpoint loads on any machine
        assert isinstance(ckpt, dict) and {'model', 'config', 'chars', 'iter', 'best_val_loss'} <= ckpt.keys()
        ckpt['config'].setdefault('lr_decay', 'cosine' if ckpt['config'].get('min_lr', 0) > 0 else 'none') # older files
    except Exception as e:
        raise UsageError(f"{path} is not a readable gpt.py checkpoint ({e.__class__.__name__}): it may be truncated "
                         "or something else; retrain with 'python gpt.py' or pass --ckpt_path=", status=1)
    return ckpt


def apply_checkpoint_config(cfg, given, ckpt, keys):
    """The checkpoint's values for keys, except those given on the command line; a different shape is an error."""
    for name in keys:
        saved = ckpt['config'][name]
        if name in given and cfg[name] != saved and name in SHAPE:
            raise UsageError(f"the checkpoint {cfg['ckpt_path']} has {name}={saved}, not --{name}={cfg[name]}; "
                             f"drop --{name}, or pass another --ckpt_path=")
        if name not in given:
            cfg[name] = saved

# ------------
# the run

def main(argv):
    cfg, given = parse_args(argv)
    dev = pick_device(cfg['device'])
    if cfg['sample']:
        return sample_from_checkpoint(cfg, given, dev)
    rank, local_rank, world_size = setup_distributed(dev)
    if world_size > 1 and dev.startswith('cuda'):
        dev = f'cuda:{local_rank}'
    log = print if rank == 0 else (lambda *a, **k: None)
    everyone_here = False
    try:
        train(cfg, given, dev, rank, world_size, log)
        everyone_here = True
    except SystemExit: # Ctrl-C: the ranks agreed to stop at the same step
        everyone_here = True
        raise
    finally:
        teardown_distributed(wait=everyone_here) # after one rank's error the others may never come to a barrier


def train(cfg, given, dev, rank, world_size, log):
    master = rank == 0
    ckpt = None
    if cfg['resume']:
        ckpt = load_checkpoint(cfg['ckpt_path'])
        # the run carries on as it started: its shape and recipe, unless overridden here
        apply_checkpoint_config(cfg, given, ckpt, SHAPE + ('batch_size', 'max_iters', 'eval_interval', 'eval_iters',
            'dropout', 'learning_rate', 'warmup_iters', 'lr_decay', 'min_lr', 'beta2', 'weight_decay', 'grad_clip', 'seed'))
        which = 'resumed'
    else:
        which = cfg['config'] if cfg['config'] != 'auto' else 'lecture' if dev.startswith('cuda') else 'small'
        if which == 'small':
            cfg.update({k: v for k, v in small.items() if k not in given})
    check_config(cfg)
    c = SimpleNamespace(**cfg)
    if dev == 'cpu':
        keep_freed_memory()
    torch.manual_seed(c.seed + rank) # each rank draws different batches
    torch.set_float32_matmul_precision('high') # TF32 matmuls on GPUs that have them
    # bf16 on a GPU: twice the matmul speed, no loss scaling needed
    use_bf16 = dev.startswith('cuda') and torch.cuda.is_bf16_supported()
    ctx = torch.autocast('cuda', dtype=torch.bfloat16) if use_bf16 else nullcontext()

    text = load_text(c.input_path, c.data_url, master)
    # here are all the unique characters that occur in this text
    chars = sorted(set(text))
    vocab_size = len(chars)
    if ckpt is not None and ckpt['chars'] != chars:
        raise UsageError(f"{c.input_path} has another vocabulary than the checkpoint {c.ckpt_path}; "
                         "resume with the text it was trained on, or start afresh without --resume", status=1)
    encode, decode = tokenizer(chars)
    train_data, val_data = split_data(text, encode, c.block_size, c.input_path)

    model = GPTLanguageModel(vocab_size, c.block_size, c.n_embd, c.n_head, c.n_layer, c.dropout).to(dev)
    optimizer = configure_optimizer(model, c.learning_rate, c.weight_decay, c.beta2, dev)
    start_iter, best_val_loss = 0, float('inf')
    if ckpt is not None:
        model.load_state_dict(ckpt['model'])
        if 'optimizer' in ckpt:
            optimizer.load_state_dict(ckpt['optimizer'])
        start_iter, best_val_loss = ckpt['iter'], ckpt['best_val_loss']
        torch.manual_seed(c.seed + rank + start_iter) # fresh batches, not a replay of the first ones
    raw_model = model # what a checkpoint holds, without the wrappers below
    if c.compile:
        model = torch.compile(model)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[int(dev.split(':')[1])] if dev.startswith('cuda') else None)

    # print the number of parameters in the model
    log(sum(p.numel() for p in raw_model.parameters())/1e6, 'M parameters')
    tokens_per_iter = c.batch_size * c.block_size * world_size
    log(f"config {which} on {dev}{f' x {world_size} processes' if world_size > 1 else ''}: "
        f"n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} block_size={c.block_size} "
        f"batch_size={c.batch_size}{f' per rank, {c.batch_size * world_size} in all' if world_size > 1 else ''} "
        f"max_iters={c.max_iters} learning_rate={c.learning_rate:g}"
        + (f", from step {start_iter} of {c.ckpt_path}" if ckpt else ""), flush=True)
    peak = lambda: measure_peak_flops(dev, torch.bfloat16 if use_bf16 else torch.float32)
    flops = flops_per_iter(raw_model, c.batch_size, c.block_size) # per rank, as the peak is per device

    if c.bench:
        return benchmark(model, optimizer, train_data, c, dev, ctx, flops, peak(), tokens_per_iter, log)

    history = os.path.splitext(c.ckpt_path)[0] + '.csv'
    if master and (not ckpt or not os.path.exists(history)): # a resumed run appends to its history, if it has one
        with open(history, 'w') as f:
            f.write('step,train_loss,val_loss,elapsed_s\n')

    # Ctrl-C finishes the step under way, then saves; a second Ctrl-C stops at once
    stop = {'requested': False}
    def request_stop(signum, frame):
        if stop['requested']:
            raise KeyboardInterrupt
        stop['requested'] = True
    old_handler = signal.signal(signal.SIGINT, request_stop)
    splits = {'train': train_data, 'val': val_data}
    progress = Progress(c.max_iters, tokens_per_iter, flops, peak) if master else None
    t0 = time.time()
    iter = start_iter
    while iter < c.max_iters:
        # every once in a while evaluate the loss on train and val sets
        if (iter % c.eval_interval == 0 and iter != start_iter or iter == 0) or iter == c.max_iters - 1:
            progress and progress.clear()
            losses = estimate_loss(model, splits, c.eval_iters, c.batch_size, c.block_size, dev, ctx)
            log(f"step {iter}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
            if master:
                with open(history, 'a') as f:
                    f.write(f"{iter},{losses['train']:.4f},{losses['val']:.4f},{time.time() - t0:.1f}\n")
            if losses['val'] < best_val_loss:
                best_val_loss = losses['val']
                if master and iter > start_iter:
                    save_checkpoint(c.ckpt_path, raw_model, optimizer, c, chars, iter, best_val_loss)
            if c.target_loss > 0 and losses['val'] <= c.target_loss:
                log(f"reached val loss {losses['val']:.4f} <= {c.target_loss} at step {iter} "
                    f"after {time.time() - t0:.1f} s")
                break
            progress and progress.restart(iter)

        # sample a batch of data
        xb, yb = get_batch(train_data, c.batch_size, c.block_size, dev)

        # evaluate the loss
        for group in optimizer.param_groups:
            group['lr'] = get_lr(iter, c)
        with ctx:
            logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        iter += 1
        if progress:
            progress.update(iter, loss)
        if stop['requested'] if world_size == 1 else all_mean(torch.tensor(float(stop['requested']), device=dev)) > 0:
            progress and progress.clear()
            if master:
                save_checkpoint(c.ckpt_path, raw_model, optimizer, c, chars, iter, best_val_loss)
            where = '' if c.ckpt_path == ckpt_path else f' --ckpt_path={c.ckpt_path}'
            log(f"interrupted at step {iter}: saved {c.ckpt_path}; continue with 'python gpt.py --resume{where}' "
                f"or sample with 'python gpt.py --sample{where}'", file=sys.stderr)
            raise SystemExit(130)
    signal.signal(signal.SIGINT, old_handler)
    progress and progress.clear()
    if not master:
        return
    save_checkpoint(c.ckpt_path, raw_model, optimizer, c, chars, iter, best_val_loss)
    log(f"trained in {time.time() - t0:.1f} s; saved {c.ckpt_path} and {history}")
    plot_history(history)

    # generate from the model
    context = torch.zeros((1, 1), dtype=torch.long, device=dev)
    print(decode(raw_model.generate(context, max_new_tokens=c.max_new_tokens)[0].tolist()))


class Progress:
    """One line between evaluations: speed, MFU and time left; in place on a terminal, every 30 s in a log."""

    def __init__(self, max_iters, tokens_per_iter, flops, measure_peak):
        self.max_iters, self.tokens_per_iter, self.flops = max_iters, tokens_per_iter, flops
        self.measure_peak, self.peak = measure_peak, None # measured when first needed: short runs skip it
        self.tty = sys.stderr.isatty()
        self.shown = False
        self.restart(0)

    def restart(self, iter):
        self.t0, self.iter0, self.last = time.time(), iter, time.time()

    def update(self, iter, loss):
        now = time.time()
        if now - self.last < (0.5 if self.tty else 30) or iter == self.iter0:
            return
        its = (iter - self.iter0) / (now - self.t0)
        if self.peak is None:
            self.peak = self.measure_peak()
            now = self.t0 = time.time() # not counted against the training's speed
            self.iter0 = iter
        self.last = now
        left = (self.max_iters - iter) / its
        line = (f"step {iter}/{self.max_iters} | loss {loss.item():.4f} | {its:.2f} it/s | "
                f"{its * self.tokens_per_iter / 1000:.1f}k tok/s | MFU {100 * its * self.flops / self.peak:.0f}% | "
                f"{int(left // 60)}m{int(left % 60):02d}s left")
        if self.tty:
            sys.stderr.write('\r' + line + '\033[K')
            self.shown = True
        else:
            sys.stderr.write(line + '\n')
        sys.stderr.flush()

    def clear(self):
        if self.shown:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()
            self.shown = False


def benchmark(model, optimizer, train_data, c, dev, ctx, flops, peak, tokens_per_iter, log):
    def step():
        xb, yb = get_batch(train_data, c.batch_size, c.block_size, dev)
        with ctx:
            _, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for _ in range(2): # warm up: allocator, kernels, compilation
        step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(c.bench_iters):
        step()
    sync(dev)
    dt = (time.perf_counter() - t) / c.bench_iters
    log(f"bench: {dt * 1000:.1f} ms/iter | {tokens_per_iter / dt / 1000:.1f}k tok/s | "
        f"{flops / dt / 1e9:.1f} GFLOP/s of a measured matmul peak of {peak / 1e9:.1f} GFLOP/s: MFU {100 * flops / dt / peak:.1f}%")


def plot_history(history):
    """A PNG of the loss curves beside the CSV, where matplotlib happens to be installed."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return
    import csv
    with open(history) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r['step']) for r in rows]
    plt.figure(figsize=(6, 4))
    for split in ('train', 'val'):
        plt.plot(steps, [float(r[f'{split}_loss']) for r in rows], label=split)
    plt.xlabel('step'); plt.ylabel('loss'); plt.legend(); plt.grid(alpha=0.3)
    plt.savefig(os.path.splitext(history)[0] + '.png', dpi=100, bbox_inches='tight')
    plt.close()


def sample_from_checkpoint(cfg, given, dev):
    ckpt = load_checkpoint(cfg['ckpt_path'])
    apply_checkpoint_config(cfg, given, ckpt, SHAPE)
    check_config(cfg)
    chars = ckpt['chars']
    encode, decode = tokenizer(chars)
    unknown = sorted(set(cfg['prompt']) - set(chars))
    if unknown:
        raise UsageError(f"--prompt has characters the model never saw: {''.join(unknown)!r}; "
                         "use only characters of the text it was trained on")
    model = GPTLanguageModel(len(chars), cfg['block_size'], cfg['n_embd'], cfg['n_head'], cfg['n_layer'])
    model.load_state_dict(ckpt['model'])
    model.to(dev).eval()
    torch.manual_seed(cfg['seed'])
    # an empty prompt starts from a newline, as the lecture starts from token 0
    start = cfg['prompt'] or ('\n' if '\n' in chars else chars[0])
    idx = torch.tensor([encode(start)], dtype=torch.long, device=dev)
    out = model.generate(idx, cfg['max_new_tokens'], cfg['temperature'], cfg['top_k'])[0].tolist()
    print(cfg['prompt'] + decode(out[len(start):]))


if __name__ == '__main__':
    try:
        main(sys.argv[1:])
    except UsageError as e:
        if os.environ.get('RANK', '0') == '0': # under torchrun every rank finds the same error: one says it
            print(f"gpt.py: error: {e}", file=sys.stderr)
        sys.exit(e.status)
    except KeyboardInterrupt:
        print("gpt.py: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError: # the reader went away (python gpt.py --sample | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()) # so the exit's flush cannot fail again
        sys.exit(141)
