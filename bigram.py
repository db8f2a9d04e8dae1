"""
bigram.py: the lecture's baseline. Each character predicts the next one from a lookup table,
trained on Tiny Shakespeare; val loss about 2.5.

    python bigram.py
    python bigram.py --max_iters=1000 --learning_rate=3e-2    any hyperparameter below as --name=value
"""
import os
import sys
import time

import requests
import torch
import torch.nn as nn
from torch.nn import functional as F

# hyperparameters
batch_size = 32 # how many independent sequences will we process in parallel?
block_size = 8 # what is the maximum context length for predictions?
max_iters = 3000
eval_interval = 300
learning_rate = 1e-2
eval_iters = 200
device = '' # 'cuda', 'mps' or 'cpu'; '' picks the first one available
seed = 1337
input_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'input.txt')
data_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
max_new_tokens = 500
# ------------

HYPERPARAMETERS = {k: v for k, v in globals().items() if not k.startswith('_') and type(v) in (bool, int, float, str)}


class UsageError(Exception):
    """Bad input from the user: reported as one line, no traceback."""
    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def parse_args(argv):
    """--name=value for every hyperparameter, typed by its default."""
    cfg = dict(HYPERPARAMETERS)
    valid = 'valid names: ' + ', '.join(HYPERPARAMETERS)
    for arg in argv:
        name, eq, value = arg[2:].partition('=') if arg.startswith('--') else (arg, '', '')
        if name not in HYPERPARAMETERS:
            raise UsageError(f"unknown hyperparameter {arg!r}; {valid}")
        default = HYPERPARAMETERS[name]
        try:
            cfg[name] = type(default)(value)
        except ValueError:
            raise UsageError(f"bad value {value!r} for --{name}: expected {type(default).__name__} like {default!r}; {valid}")
    for name in ('batch_size', 'block_size', 'max_iters', 'eval_interval', 'eval_iters'):
        if cfg[name] <= 0:
            raise UsageError(f"--{name}={cfg[name]} must be positive")
    if cfg['learning_rate'] <= 0:
        raise UsageError(f"--learning_rate={cfg['learning_rate']} must be positive")
    if cfg['max_new_tokens'] < 0:
        raise UsageError(f"--max_new_tokens={cfg['max_new_tokens']} must be 0 or more")
    return cfg


def pick_device(name):
    if not name:
        return 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    if name.split(':')[0] not in ('cuda', 'mps', 'cpu'):
        raise UsageError(f"--device={name!r} must be 'cuda', 'mps' or 'cpu'")
    if name.startswith('cuda') and not torch.cuda.is_available() or name == 'mps' and not torch.backends.mps.is_available():
        raise UsageError(f"--device={name} is not available on this machine; use --device=cpu")
    return name

# ------------
# data: Tiny Shakespeare, or any UTF-8 text

def load_text(path, url):
    """The training text; downloaded to path (atomically) if it is not there."""
    if not os.path.exists(path):
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
    return x.to(device), y.to(device)


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device):
    """Mean loss over eval_iters batches of each split: far less noisy than one batch's loss."""
    out = {}
    model.eval()
    for name, data in splits.items():
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(data, batch_size, block_size, device)
            logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[name] = losses.mean().item()
    model.train()
    return out

# ------------
# model

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

# ------------
# the run

def main(argv):
    cfg = parse_args(argv)
    dev = pick_device(cfg['device'])
    torch.manual_seed(cfg['seed'])

    text = load_text(cfg['input_path'], cfg['data_url'])
    # here are all the unique characters that occur in this text
    chars = sorted(set(text))
    vocab_size = len(chars)
    encode, decode = tokenizer(chars)
    train_data, val_data = split_data(text, encode, cfg['block_size'], cfg['input_path'])
    splits = {'train': train_data, 'val': val_data}

    model = BigramLanguageModel(vocab_size).to(dev)
    print(f"bigram on {dev}: vocab_size={vocab_size} batch_size={cfg['batch_size']} block_size={cfg['block_size']} "
          f"max_iters={cfg['max_iters']} learning_rate={cfg['learning_rate']:g}", flush=True)

    # create a PyTorch optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg['learning_rate'])

    t0 = last = time.time()
    tty = sys.stderr.isatty()
    for iter in range(cfg['max_iters']):

        # every once in a while evaluate the loss on train and val sets
        if iter % cfg['eval_interval'] == 0 or iter == cfg['max_iters'] - 1:
            tty and sys.stderr.write('\r\033[K')
            losses = estimate_loss(model, splits, cfg['eval_iters'], cfg['batch_size'], cfg['block_size'], dev)
            print(f"step {iter}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)

        # sample a batch of data
        xb, yb = get_batch(train_data, cfg['batch_size'], cfg['block_size'], dev)

        # evaluate the loss
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        # progress: in place on a terminal, a line every 30 s in a log
        now = time.time()
        if now - last >= (0.5 if tty else 30):
            last = now
            its = (iter + 1) / (now - t0)
            left = (cfg['max_iters'] - iter - 1) / its
            line = f"step {iter + 1}/{cfg['max_iters']} | {its:.0f} it/s | {int(left // 60)}m{int(left % 60):02d}s left"
            sys.stderr.write('\r' + line + '\033[K' if tty else line + '\n')
            sys.stderr.flush()
    tty and sys.stderr.write('\r\033[K')
    print(f"trained in {time.time() - t0:.1f} s")

    # generate from the model
    context = torch.zeros((1, 1), dtype=torch.long, device=dev)
    print(decode(model.generate(context, max_new_tokens=cfg['max_new_tokens'])[0].tolist()))


if __name__ == '__main__':
    try:
        main(sys.argv[1:])
    except UsageError as e:
        print(f"bigram.py: error: {e}", file=sys.stderr)
        sys.exit(e.status)
    except KeyboardInterrupt:
        print("bigram.py: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError: # the reader went away (python bigram.py | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()) # so the exit's flush cannot fail again
        sys.exit(141)
