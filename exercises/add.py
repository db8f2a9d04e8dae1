"""
add.py: the lecture's exercise 2, advanced suggestion: train the lecture's transformer (gpt.py's GPTLanguageModel,
imported, not copied) to add two numbers, a+b=c, and measure how many problems it never saw it gets right.

    python exercises/add.py                              3-digit addition: train, then test on held-out problems
    python exercises/add.py --n_digits=2 --ops=+-*/      any option as --name=value (python exercises/add.py --help)
    python exercises/add.py --sample --prompt="123+456=" the checkpoint's answer, greedy

A problem is one line of characters, always the same length for a given n_digits: a and b zero-padded to n_digits,
then c zero-padded to its widest (n_digits + 1 for + and -, 2 * n_digits with * or /; a '-' in front if negative;
a/b is the quotient then the remainder, n_digits each, b > 0), written backwards (ones first, the order in which we
add by hand: each digit then needs only the digits and the carry before it; measured, the model learned 3-digit
addition as fast the usual way round, --reverse=False), then the end mark '$'. With n_digits=2:

    57+68=125  is  57+68=521$        5+7=12  is  05+07=210$        57-68=-11  is  57-68=11-$
    57/08=7 r 1  is  57/08=1070$  (07 01, backwards)         57*68=3876  with --cot  is  57*68=654+243=6783$
"""
import os
import re
import sys
import time
from types import SimpleNamespace

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) # gpt.py, from any folder
import gpt
from gpt import GPTLanguageModel, UsageError

# the problems
n_digits = 3 # a and b have up to this many digits
ops = '+' # the operations to learn, one drawn at random per problem: any of + - * / (/: quotient and remainder)
reverse = True # write c ones first; False: as usual, the most significant digit first
mask = True # train on the answer only: a and b are random, predicting them teaches nothing
cot = False # with --ops=*: first write the partial products, a times each digit of b (ones first), then c
held_out = 25 # percent of the problems, chosen by a hash of (a, op, b), never trained on (2 digits: 2,000 or more)
eval_problems = 2000 # held-out problems to test on (all of them, if there are fewer)
# the model: 102,544 parameters at 3 digits, more than it needs (one layer 12 wide, 2,416, learned it too)
n_layer = 2 # blocks
n_head = 4 # heads of self-attention in each block
n_embd = 64 # the width of every token's vector
dropout = 0.0 # every problem is new: nothing to overfit
# training
batch_size = 256 # problems per step, drawn afresh every step
max_iters = 100000 # a cap: on a CPU, max_time ends the run
max_time = 120.0 # seconds of training at most, 0: no limit (3-digit addition: 99% after 30-50 s on 2 CPU threads)
eval_interval = 500 # test on the held-out problems every this many steps
learning_rate = 3e-3 # AdamW's rate, after the warmup...
warmup_iters = 100 # ...reached in this many steps...
lr_decay = 'linear' # ...then down to min_lr where the run ends (by max_iters or max_time): 'none', 'linear', 'cosine'
min_lr = 0.0 # where the decay ends
beta2 = 0.99 # how fast AdamW's second moment forgets
weight_decay = 0.1 # AdamW's, on the weight matrices only
seed = 1337 # the same run every time
device = gpt.device # cuda, mps or cpu: the first this machine has
ckpt_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'add.pt') # the model, its config and vocabulary
sample = False # only answer --prompt with the checkpoint at ckpt_path (no training)
prompt = '' # a problem for --sample, like 123+456=

OPTIONS = {k: v for k, v in globals().items() if not k.startswith('_') and type(v) in (bool, int, float, str)}
VOCAB = '0123456789+-*=$/' # every character a problem can have; '$' ends the answer ('/' last: old tokens stay)
OPS = '+-*/'
encode, decode = gpt.tokenizer(VOCAB)

# ------------
# the problems

def solve(a, op, b, n_digits):
    """c as one number: a/b is the quotient's digits then the remainder's, n_digits each (57/8, 2 digits: 701)."""
    return a + b if op == '+' else a - b if op == '-' else a * b if op == '*' else a // b * 10**n_digits + a % b


def as_written(value, op, n_digits):
    return f"{value // 10**n_digits} r {value % 10**n_digits}" if op == '/' else str(value)


def answer_width(c):
    """How many characters follow '=' before the end mark: c, and with --cot the partial products before it."""
    return c_width(c) + (c.n_digits * (c.n_digits + 2) if c.cot else 0) # n partials of n + 1 digits, and '+' or '='


def c_width(c):
    return 2 * c.n_digits if set('*/') & set(c.ops) else c.n_digits + 1


def prompt_len(c):
    return 2 * c.n_digits + 2 # 'a+b='


def problem_text(a, op, b, c):
    """'057+068=5210$': the whole problem as the model reads it (see the top of this file)."""
    answer = f"{solve(a, op, b, c.n_digits):0{c_width(c)}d}" # zero-padded, a '-' in front if negative
    if c.cot: # 57*68: 456 and 342, then 3876
        partials = [f"{a * int(d):0{c.n_digits + 1}d}" for d in reversed(f"{b:0{c.n_digits}d}")]
        answer = '+'.join(p[::-1] if c.reverse else p for p in partials) + '=' + (answer[::-1] if c.reverse else answer)
    elif c.reverse:
        answer = answer[::-1]
    return f"{a:0{c.n_digits}d}{op}{b:0{c.n_digits}d}=" + answer + '$'


def is_held_out(a, op, b, c):
    """Whether the problem a OPS[op] b is held out, for ints or tensors of them: a hash of the problem into 100
    buckets, the first c.held_out of them held out. The split of + is the same whatever else ops holds."""
    swap = (op % 2 == 0) * (a > b) # + and * (0 and 2) commute: b+a goes where a+b goes, or it would give a+b away
    a, b = a + swap * (b - a), b + swap * (a - b)
    x = ((a * 10**c.n_digits + b) * 4 + op) % 2**31 # the problem as one number (mod 2^31: the product fits int64)
    h = x * 2654435761 % 2**32 # Knuth's multiplicative hash: neighbouring problems land far apart
    return (h >> 16) % 100 < c.held_out


def random_problems(c, n, generator=None):
    """n problems drawn at random: tensors a, op (an index into OPS), b."""
    a = torch.randint(10**c.n_digits, (n,), generator=generator)
    b = torch.randint(10**c.n_digits, (n,), generator=generator)
    op = torch.tensor([OPS.index(o) for o in c.ops])[torch.randint(len(c.ops), (n,), generator=generator)]
    return a, op, torch.where((op == OPS.index('/')) & (b == 0), 1, b) # no division by 0 (b = 1 twice as often)


def encode_problems(a, op, b, c):
    return torch.tensor([encode(problem_text(x, OPS[o], y, c)) for x, o, y in zip(a.tolist(), op.tolist(), b.tolist())])


def get_batch(c, batch_size):
    """Inputs and targets for one step: new problems every time, none of them held out."""
    while True: # twice as many as needed, less the held-out ones: enough, nearly always
        a, op, b = random_problems(c, 2 * batch_size)
        keep = ~is_held_out(a, op, b, c)
        if keep.sum() >= batch_size:
            break
    data = encode_problems(a[keep][:batch_size], op[keep][:batch_size], b[keep][:batch_size], c)
    x, y = data[:, :-1], data[:, 1:].clone() # y: the next character after each of x's
    if c.mask: # no loss for the predictions of the prompt's characters: the first one to count is c's first
        y[:, :prompt_len(c) - 1] = -1
    return x.to(c.device), y.to(c.device)


def loss_of(logits, y):
    # targets -1 (the prompt, when masked) take no part: the mean is over the answer's characters only
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)


def eval_set(c):
    """Up to c.eval_problems held-out problems, the same every run, and a line saying how many there are."""
    g = torch.Generator().manual_seed(0) # not the training's generator: the same problems whatever the seed
    n = 10**c.n_digits
    total = len(c.ops) * n * n
    if total <= 10**7: # every problem, to count the held-out ones exactly
        i = torch.arange(total)
        a, op, b = i // n % n, torch.tensor([OPS.index(o) for o in c.ops])[i // (n * n)], i % n
        a, op, b = (t[(op != OPS.index('/')) | (b > 0)] for t in (a, op, b)) # not a/0
        total = len(a)
    else: # a million at random stand for them
        a, op, b = random_problems(c, 10**6, g)
    held = is_held_out(a, op, b, c)
    share = held.float().mean().item()
    count = f"{int(held.sum()):,}" if total <= 10**7 else f"about {share * total / 1e6:,.1f} million"
    line = (f"{total:,} problems ({', '.join(f'a{o}b' for o in c.ops)} with a, b < {n:,}), {count} of them held out "
            f"({share:.1%}), never trained on")
    pick = torch.randperm(int(held.sum()), generator=g)[:c.eval_problems]
    return (a[held][pick], op[held][pick], b[held][pick]), line

# ------------
# the model: gpt.py's, with a block just long enough for one problem

def build_model(c, vocab=VOCAB):
    block_size = prompt_len(c) + answer_width(c) # the problem less its last character, the end mark
    return GPTLanguageModel(len(vocab), block_size, c.n_embd, c.n_head, c.n_layer, c.dropout).to(c.device)


@torch.no_grad()
def greedy(model, idx, n):
    """idx followed by the n likeliest next tokens, one at a time (argmax: no sampling)."""
    for _ in range(n):
        logits = model(idx)[0]
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def evaluate(model, problems, c):
    """(share of problems answered exactly right, end mark included; share right at each character of c, ones first),
    greedy. All prompts have the same length: one forward of the whole set per character of the answer."""
    data = encode_problems(*problems, c).to(c.device)
    model.eval()
    out = greedy(model, data[:, :prompt_len(c)], data.size(1) - prompt_len(c))
    model.train()
    right = out[:, -c_width(c) - 1:] == data[:, -c_width(c) - 1:] # (problems, characters of c, then the end mark)
    digits = right[:, :-1] if c.reverse else right[:, :-1].flip(1)
    return right.all(1).float().mean().item(), digits.float().mean(0).tolist()

# ------------
# training

def train(c):
    torch.manual_seed(c.seed)
    model = build_model(c)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, "
          f"n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} on {c.device}")
    problems, line = eval_set(c)
    print(line)
    a, op, b = (t.item() for t in random_problems(c, 1))
    print(f"for example {problem_text(a, OPS[op], b, c)} (c {'backwards' if c.reverse else 'as usual'}, "
          f"loss {'on c only' if c.mask else 'on every character'})")
    optimizer = gpt.configure_optimizer(model, c.learning_rate, c.weight_decay, c.beta2) # decay on matrices only
    t0 = shown = time.time()
    for it in range(c.max_iters):
        elapsed = time.time() - t0
        if it % c.eval_interval == 0 and it > 0:
            exact, _ = evaluate(model, problems, c)
            print(f"step {it} ({elapsed:.0f} s): loss {loss.item():.4f}, held-out exact match {exact:.1%}")
        x, y = get_batch(c, c.batch_size)
        loss = loss_of(model(x)[0], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups: # decayed over max_iters, or over max_time if more of it is spent
            group['lr'] = gpt.get_lr(it, c, elapsed / c.max_time if c.max_time > 0 else 0.0)
        optimizer.step()
        if time.time() - shown > 30: # a progress line on stderr, as gpt.py's in a log
            shown = time.time()
            print(f"step {it + 1}/{c.max_iters} | loss {loss.item():.4f} | {(it + 1) / (shown - t0):.1f} it/s"
                  + (f" | {c.max_time - (shown - t0):.0f} s left" if c.max_time > 0 else ''), file=sys.stderr)
        if c.max_time > 0 and time.time() - t0 >= c.max_time:
            break
    save(c, model)
    print(f"trained in {time.time() - t0:.1f} s, {it + 1} steps, last loss {loss.item():.4f}; saved {c.ckpt_path}")
    exact, digits = evaluate(model, problems, c)
    print(f"held-out exact match {exact:.1%} ({len(problems[0]):,} problems); per character of c (ones first): "
          + ' '.join(f'{100 * d:.1f}' for d in digits))


def save(c, model):
    gpt.save_atomically(c.ckpt_path, {'model': model.state_dict(), 'config': vars(c), 'vocab': VOCAB})

# ------------
# --sample: the checkpoint's answer to one problem

def answer(c):
    try:
        ckpt = torch.load(c.ckpt_path, map_location='cpu', weights_only=True)
        trained = SimpleNamespace(**{**OPTIONS, **ckpt['config'], 'device': c.device}) # the problems it learned
        model = build_model(trained, ckpt['vocab']) # one from before '/' has one token fewer
        model.load_state_dict(ckpt['model'])
    except FileNotFoundError:
        raise UsageError(f"no checkpoint at {c.ckpt_path}: train one first with 'python exercises/add.py'", status=1)
    except Exception as e:
        raise UsageError(f"{c.ckpt_path} is not a readable add.py checkpoint ({e.__class__.__name__})", status=1)
    unknown = sorted(set(c.prompt) - set(VOCAB))
    if unknown:
        raise UsageError(f"--prompt={c.prompt!r} has characters the model never saw: {''.join(unknown)!r}")
    m = re.fullmatch(r'(\d+)([-+*/])(\d+)=', c.prompt)
    bad = not m or m[2] not in trained.ops or max(len(m[1]), len(m[3])) > trained.n_digits
    if bad or m[2] == '/' and int(m[3]) == 0:
        raise UsageError(f"--prompt={c.prompt!r} must be a problem like the checkpoint's, a{trained.ops[0]}b= with a "
                         f"and b of up to {trained.n_digits} digits (b > 0 for /) and an operation of {trained.ops!r}")
    a, op, b = int(m[1]), m[2], int(m[3])
    idx = torch.tensor([encode(problem_text(a, op, b, trained)[:prompt_len(trained)])], device=c.device)
    out = decode(greedy(model.eval(), idx, answer_width(trained) + 1)[0, -c_width(trained) - 1:].tolist()) # c, '$'
    written = out[:-1][::-1] if trained.reverse else out[:-1] # as we write numbers, most significant first
    n = trained.n_digits
    said = as_written(int(written), op, n) if out[-1] == '$' and re.fullmatch(r'-?\d+', written) else \
        f'{out!r} (not a number)'
    truth = as_written(solve(a, op, b, n), op, n)
    print(f"{c.prompt}{said}" + ('' if said == truth else f"  (wrong: it is {truth})"))

# ------------
# the command line, as gpt.py's

def parse_args(argv):
    """--name=value for every option, typed by its default."""
    cfg = dict(OPTIONS)
    for arg in argv:
        name, _, value = arg[2:].partition('=')
        if not arg.startswith('--') or name not in OPTIONS:
            raise UsageError(f"unknown option {arg!r}; valid names: {', '.join(OPTIONS)} (add.py --help)")
        kind = type(OPTIONS[name])
        try:
            cfg[name] = {'true': True, '1': True, 'false': False, '0': False}[value.lower() if '=' in arg else 'true'] \
                if kind is bool else kind(value)
        except (KeyError, ValueError):
            raise UsageError(f"bad value {value!r} for --{name}: expected {kind.__name__} like {OPTIONS[name]!r}")
    return SimpleNamespace(**cfg)


def check(c):
    for name in ('n_digits', 'eval_problems', 'n_layer', 'n_head', 'n_embd', 'batch_size', 'max_iters',
                 'eval_interval', 'learning_rate'):
        if getattr(c, name) <= 0:
            raise UsageError(f"--{name}={getattr(c, name)} must be positive")
    if c.n_digits > 9:
        raise UsageError(f"--n_digits={c.n_digits} must be at most 9 (a*b must fit in 64 bits)")
    if not c.ops or set(c.ops) - set(OPS) or len(set(c.ops)) < len(c.ops):
        raise UsageError(f"--ops={c.ops!r} must be some of {OPS!r}, each once")
    if not 1 <= c.held_out <= 50:
        raise UsageError(f"--held_out={c.held_out} must be a percentage from 1 to 50")
    if c.cot and c.ops != '*':
        raise UsageError(f"--cot writes the partial products of a*b: it needs --ops=*, not --ops={c.ops}")
    if c.n_embd % c.n_head:
        raise UsageError(f"--n_embd={c.n_embd} must be divisible by --n_head={c.n_head}")
    if not 0 <= c.dropout < 1:
        raise UsageError(f"--dropout={c.dropout} must be in [0, 1)")
    if c.lr_decay not in ('none', 'linear', 'cosine'):
        raise UsageError(f"--lr_decay={c.lr_decay!r} must be 'none', 'linear' or 'cosine'")
    if not 0 <= c.min_lr <= c.learning_rate:
        raise UsageError(f"--min_lr={c.min_lr} must be in [0, --learning_rate={c.learning_rate}]")
    for name in ('max_time', 'warmup_iters', 'weight_decay'):
        if getattr(c, name) < 0:
            raise UsageError(f"--{name}={getattr(c, name)} must be 0 or more")
    if not 0 <= c.beta2 < 1:
        raise UsageError(f"--beta2={c.beta2} must be in [0, 1)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(c.ckpt_path))):
        raise UsageError(f"--ckpt_path={c.ckpt_path}: no such folder; make it first")
    gpt.check_device(c.device)


def usage():
    comments = dict(re.findall(r'^(\w+) = .*? # (.*)$', open(__file__, encoding='utf-8').read(), re.M))
    return '\n'.join([__doc__.strip(), '', 'options (--name=value), with their defaults:'] +
                     [f"  {f'--{k}={v}':<26} {comments.get(k, '')}".rstrip() for k, v in OPTIONS.items()])


def main(argv):
    if '-h' in argv or '--help' in argv:
        return print(usage())
    c = parse_args(argv)
    check(c)
    if c.sample:
        answer(c)
    else:
        train(c)


if __name__ == '__main__':
    gpt.run_command(main, 'add.py')
