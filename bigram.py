"""
bigram.py: the lecture's baseline. Each character predicts the next one from a lookup table, trained on Tiny
Shakespeare; val loss about 2.5. Part one is the lecture; part two, after the marked line, is what it leaves out.

    python bigram.py
    python bigram.py --max_iters=1000 --learning_rate=3e-2    any hyperparameter as --name=value (python bigram.py --help)
"""
import torch
import torch.nn as nn
from torch.nn import functional as F

# hyperparameters
batch_size = 32 # how many independent sequences will we process in parallel?
block_size = 8 # what is the maximum context length for predictions?
max_iters = 3000 # training steps
eval_interval = 300 # estimate the loss every this many steps...
learning_rate = 1e-2
device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
eval_iters = 200 # ...over this many batches of each split
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

# super simple bigram model

class BigramLanguageModel(nn.Module):

    def __init__(self, vocab_size):
        super().__init__()
        # each token directly reads off the logits for the next token from a lookup table
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):

        # idx and targets are both (B,T) tensor of integers
        logits = self.token_embedding_table(idx) # (B,T,C)

        if targets is None:
            loss = None
        else:
            B, T, C = logits.shape
            logits = logits.view(B*T, C) # cross_entropy wants the classes in the second dimension
            targets = targets.view(B*T)
            loss = F.cross_entropy(logits, targets)

        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens):
        # idx is (B, T) array of indices in the current context
        for _ in range(max_new_tokens):
            # get the predictions
            logits, loss = self(idx)
            # focus only on the last time step
            logits = logits[:, -1, :] # becomes (B, C)
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

    model = BigramLanguageModel(vocab_size)
    m = model.to(c.device)
    run.begin(vocab_size) # says what runs

    # create a PyTorch optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.learning_rate)

    for iter in range(c.max_iters):

        # every once in a while evaluate the loss on train and val sets
        if iter % c.eval_interval == 0 or iter == c.max_iters - 1:
            losses = estimate_loss(model, splits, c.eval_iters, c.batch_size, c.block_size, c.device)
            print(f"step {iter}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            run.after_eval(iter, losses) # a run that diverged stops here

        # sample a batch of data
        xb, yb = get_batch(train_data, c.batch_size, c.block_size, c.device)

        # evaluate the loss
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.after_step(iter) # progress

    run.end()

    # generate from the model
    context = torch.zeros((1, 1), dtype=torch.long, device=c.device)
    print(decode(m.generate(context, max_new_tokens=c.max_new_tokens)[0].tolist()))


# ======================================================================================================================
# PART TWO: NOT IN THE LECTURE. Everything above is the lecture; below is what it leaves out, called from above in
# single lines: the command line and its errors, the download, progress.
# ======================================================================================================================
import math
import os
import re
import sys
import time
from types import SimpleNamespace

import requests

# options of a run, given like the hyperparameters (--name=value)
seed = 1337 # the lecture's torch.manual_seed(1337): the same run every time
input_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'input.txt')
data_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
max_new_tokens = 500 # how many characters to sample

HYPERPARAMETERS = {k: v for k, v in globals().items() if not k.startswith('_') and type(v) in (bool, int, float, str)}
PROGRESS_EVERY = 30 # seconds between progress lines in a log (on a terminal: 10)

# ------------
# the command line (UsageError, parse_args, check_device, load_text and run_command: the same in gpt.py)

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


def usage():
    """--help: the commands of the docstring, then every hyperparameter with its default and its comment above."""
    comments = dict(re.findall(r'^(\w+) = .*? # (.*)$', open(__file__, encoding='utf-8').read(), re.M))
    lines = [__doc__.strip(), '', 'hyperparameters and options (--name=value), with their defaults:']
    lines += [f"  {f'--{name}={v}':<26} {comments.get(name, '')}".rstrip() for name, v in HYPERPARAMETERS.items()]
    return '\n'.join(lines)


def check_config(c):
    for name in ('batch_size', 'block_size', 'max_iters', 'eval_interval', 'eval_iters', 'learning_rate'):
        if getattr(c, name) <= 0:
            raise UsageError(f"--{name}={getattr(c, name)} must be positive")
    if c.max_new_tokens < 0:
        raise UsageError(f"--max_new_tokens={c.max_new_tokens} must be 0 or more")
    check_device(c.device)


def check_device(device):
    kind, colon, index = device.partition(':')
    if kind not in ('cuda', 'mps', 'cpu') or colon and not index.isdigit():
        raise UsageError(f"--device={device!r} must be 'cuda', 'cuda:N', 'mps' or 'cpu'")
    have = torch.cuda.device_count() if kind == 'cuda' else kind == 'cpu' or torch.backends.mps.is_available()
    if int(index or 0) >= have: # (a machine with one GPU has cuda:0 alone)
        raise UsageError(f"--device={device} is not on this machine; use --device={'cuda' if have else 'cpu'}")

# ------------
# data: Tiny Shakespeare, or any UTF-8 text

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

# ------------
# the run: what train() calls

class Run:
    """What a training run does beyond the lecture's loop: it says what runs, how far it is, and if it diverged."""

    def __init__(self, c):
        self.c = c

    def begin(self, vocab_size):
        c = self.c
        print(f"bigram on {c.device}: vocab_size={vocab_size} batch_size={c.batch_size} block_size={c.block_size} "
              f"max_iters={c.max_iters} learning_rate={c.learning_rate:g}", flush=True)
        self.t0 = self.shown = time.perf_counter()
        self.every = 10 if sys.stderr.isatty() else PROGRESS_EVERY # a log gets fewer

    def after_eval(self, iter, losses):
        if not all(map(math.isfinite, losses.values())): # nothing more to learn from, or to sample
            raise UsageError(f"step {iter}: the loss is {losses['val']}, training diverged: lower --learning_rate "
                             f"(here {self.c.learning_rate:g})", status=1)

    def after_step(self, iter):
        """A progress line every so often (a 9-second run on a fast CPU shows none)."""
        now = time.perf_counter()
        if now - self.shown >= self.every:
            self.shown, its = now, (iter + 1) / (now - self.t0)
            left = max(0.0, (self.c.max_iters - iter - 1) / its)
            print(f"step {iter + 1}/{self.c.max_iters} | {its:.0f} it/s | {int(left // 60)}m{int(left % 60):02d}s left",
                  file=sys.stderr, flush=True)

    def end(self):
        print(f"trained in {time.perf_counter() - self.t0:.1f} s")

# ------------
# the command

def main(argv):
    if '-h' in argv or '--help' in argv:
        return print(usage())
    c, _ = parse_args(argv)
    check_config(c)
    train(c, Run(c))


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
