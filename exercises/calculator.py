"""
calculator.py: the lecture's exercise 2, its "swole doge project": a calculator clone in GPT for all of + - * /. One
model (gpt.py's GPTLanguageModel, imported, not copied) learns them all from problems written out with a chain of
thought where one is needed, and is tested on problems it never saw.

    python exercises/calculator.py                  train on 3-digit + - * / (10 minutes), test on held-out problems
    python exercises/calculator.py --ask            type problems (123*45, 7/3, 12-345) and read its answers
    python exercises/calculator.py --ask="12*34"    answer one and exit
    python exercises/calculator.py --cot=False      any option as --name=value (--help lists them)

A problem is one line: a and b zero-padded to n_digits, then the answer, then the end mark '$'. Every number is
written ones first, the order in which we work by hand: each digit then needs only what is written before it (the
carry, or the borrow). So a number below 0 is written as an odometer shows it, run back from 0: -1 is 999 and -13
is 987 (with n_digits=2; a top digit 9: below 0). Written with a sign, its ones would hang on which of a and b is
larger: 51-44=7 and 41-54=-13 both start from 1-4, yet end in 7 and 3; the model's misses were there. a/b answers
the quotient and the remainder, n_digits each. With n_digits=2:

    57+68=125        57+68=521$
    57-68=-11        57-68=989$                       (1000-11, ones first)
    57*68=3876       57*68=654+243=6783$              (57*8=456 and 57*6=342 first, then 456+3420)
    57/8=7 r 1       57/08=0:000:50,7:650:1000=1070$  (long division, below; then 07 and 01, ones first)

The chain of thought (--cot) writes out what the answer's digits need: for a*b, a times each digit of b (the partial
products); for a/b, long division: for each digit of a, most significant first, bring it down beside the remainder,
then the quotient's digit q, q*b and what remains (57/8: 5 is 0 eights, 0, 5 remains; 57 is 7 eights, 56, 1 remains).
Without it (--cot=False) a*b and a/b write c at once, like a+b.

The last digit of the quotient is a guess that what remains checks, as we check by hand: below 0 means one less, b
or more one more, and c says so (57/08=0:000:50,8:460:3999=1070$: 8 eights is 64, 9993 is -7, so 7 r 1). The model's
misses were that digit, one off where a is within a few of a multiple of b; so in training a share of divisions
(--slips) write it one off, to be checked, and the loss asks for the right digit there all the same.
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
ops = '+-*/' # the operations to learn, one drawn at random per problem (/: quotient and remainder)
cot = True # write out the partial products of a*b and the long division of a/b before c
slips = 0.3 # share of training divisions whose quotient's last digit is written one off, for the check to mend
held_out = 25 # percent of the problems, chosen by a hash of (a, op, b), never trained on
eval_problems = 2000 # held-out problems of each operation to test on (all of them, if there are fewer)
# the model: 105,170 parameters
n_layer = 2 # blocks
n_head = 4 # heads of self-attention in each block
n_embd = 64 # the width of every token's vector
dropout = 0.0 # every problem is new: nothing to overfit
# training
batch_size = 256 # problems per step, drawn afresh every step
max_iters = 100000 # a cap: on a CPU, max_time ends the run
max_time = 600.0 # seconds of training at most, 0: no limit
eval_interval = 1000 # test on the held-out problems every this many steps
learning_rate = 3e-3 # AdamW's rate, after the warmup...
warmup_iters = 100 # ...reached in this many steps...
lr_decay = 'linear' # ...then down to min_lr where the run ends (by max_iters or max_time): 'none', 'linear', 'cosine'
min_lr = 0.0 # where the decay ends
beta2 = 0.99 # how fast AdamW's second moment forgets
weight_decay = 0.1 # AdamW's, on the weight matrices only
seed = 1337 # the same run every time
device = gpt.device # cuda, mps or cpu: the first this machine has
ckpt_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'calculator.pt') # the model and its config
ask = '' # a problem for the checkpoint to answer, like 12*34; --ask alone: read them line by line

OPTIONS = {k: v for k, v in globals().items() if not k.startswith('_') and type(v) in (bool, int, float, str)}
VOCAB = '$0123456789+-*/=:,' # every character a problem can have; '$' ends it, and pads it to the batch's length
OPS = '+-*/'
encode, decode = gpt.tokenizer(VOCAB)

# ------------
# the problems

def backwards(n, width):
    return f"{n:0{width}d}"[::-1] # ones first, zero-padded


def answer_of(a, op, b, n):
    """c as one number: a-b below 0 as an odometer shows it (-11, n=2: 989); a/b the quotient's digits then the
    remainder's, n digits each (57/8, n=2: 701)."""
    return (a + b if op == '+' else (a - b) % 10**(n + 1) if op == '-' else a * b if op == '*' else
            a // b * 10**n + a % b)


def problem_text(a, op, b, c, slip=0):
    """'057+068=5210$': the whole problem as the model reads it (see the top of this file); slip: the quotient's last
    digit written that much off (-1 or 1), to be checked."""
    n = c.n_digits
    thought = ''
    if c.cot and op == '*': # a times each digit of b, ones first
        thought = '+'.join(backwards(a * int(d), n + 1) for d in reversed(f"{b:0{n}d}")) + '='
    elif c.cot and op == '/': # long division: for each digit of a, the quotient's digit q, q*b, and what remains
        steps, r = [], 0
        for i, d in enumerate(f"{a:0{n}d}"):
            r = 10 * r + int(d)
            q = r // b
            if i < n - 1:
                r -= q * b
                steps.append(f"{q}:{backwards(q * b, n + 1)}:{backwards(r, n)}")
            else: # the guess, q*b, and what remains, -b <= r - q*b < 2b (the guess a digit: 0 to 9), as an odometer
                q += slip if 0 <= q + slip <= 9 else -slip
                steps.append(f"{q}:{backwards(q * b, n + 1)}:{backwards((r - q * b) % 10**(n + 2), n + 2)}")
        thought = ','.join(steps) + '='
    return f"{a:0{n}d}{op}{b:0{n}d}=" + thought + backwards(answer_of(a, op, b, n), n_digits_of_c(op, c)) + '$'


def prompt_len(c):
    return 2 * c.n_digits + 2 # 'a+b='


def is_held_out(a, op, b, c):
    """Whether the problem a OPS[op] b is held out, for ints or tensors of them: a hash of the problem into 100
    buckets, the first c.held_out of them held out. The split of + is the same whatever else ops holds."""
    swap = (op % 2 == 0) * (a > b) # + and * (0 and 2) commute: b+a goes where a+b goes, or it would give a+b away
    a, b = a + swap * (b - a), b + swap * (a - b)
    x = ((a * 10**c.n_digits + b) * 4 + op) % 2**31 # the problem as one number (mod 2^31: the product fits int64)
    h = x * 2654435761 % 2**32 # Knuth's multiplicative hash: neighbouring problems land far apart
    return (h >> 16) % 100 < c.held_out


def random_problems(c, n, generator=None, training=False):
    """n problems drawn at random: tensors a, op (an index into OPS), b. For training, half of the numbers are cut to
    a number of digits drawn first, so that small ones come up as often as large ones (b < 100, a tenth of 3-digit
    problems, makes a/b's longest divisions: drawn uniformly, the model got 85% of those right, 99.6% of the rest),
    and + - * / are drawn 1:1:2:3, more of what is learned last."""
    a = torch.randint(10**c.n_digits, (n,), generator=generator)
    b = torch.randint(10**c.n_digits, (n,), generator=generator)
    if training:
        a, b = (torch.where(torch.rand(n) < 0.5, x, x % 10**torch.randint(1, c.n_digits + 1, (n,))) for x in (a, b))
    ops = torch.tensor([OPS.index(o) for o in c.ops])
    weights = torch.tensor([1.0, 1.0, 2.0, 3.0])[ops] if training else None # more of the longer problems
    op = ops[torch.randint(len(ops), (n,), generator=generator) if weights is None else
             torch.multinomial(weights, n, replacement=True, generator=generator)]
    return a, op, torch.where((op == OPS.index('/')) & (b == 0), 1, b) # no division by 0 (b = 1 twice as often)


def encode_problems(a, op, b, c, slip=None):
    """Tokens, each problem padded with end marks to the longest of them."""
    length = max(len(problem_text(1, OPS[o], 1, c)) for o in set(op.tolist()))
    slip = [0] * len(a) if slip is None else slip.tolist()
    texts = [problem_text(x, OPS[o], y, c, s) for x, o, y, s in zip(a.tolist(), op.tolist(), b.tolist(), slip)]
    return torch.tensor([encode(t.ljust(length, '$')) for t in texts])


def inputs_and_targets(data, c):
    """x, and y: the next character after each of x's, -1 where it does not count: the prompt's characters (a and b
    are random: predicting them teaches nothing) and the padding after the end mark. On the CPU."""
    x, y = data[:, :-1], data[:, 1:].clone()
    y[:, :prompt_len(c) - 1] = -1
    end = (data == encode('$')[0]).int().argmax(1, keepdim=True) # where each problem's end mark is
    y[torch.arange(y.size(1)) >= end] = -1
    return x, y


def get_batch(c, batch_size):
    """Inputs and targets for one step, one pair per length of problem (a+b and a-b, a*b, a/b: padding a+b to a/b's
    length would double the step's work): new problems every time, none of them held out; c.slips of the divisions
    with a slip, whose target is the right digit all the same."""
    while True: # twice as many as needed, less the held-out ones: enough, nearly always
        a, op, b = random_problems(c, 2 * batch_size, training=True)
        keep = ~is_held_out(a, op, b, c)
        if keep.sum() >= batch_size:
            break
    a, op, b = a[keep][:batch_size], op[keep][:batch_size], b[keep][:batch_size]
    slip = (torch.rand(batch_size) < c.slips) * (op == OPS.index('/')) * (2 * torch.randint(2, (batch_size,)) - 1)
    guess_at = problem_text(0, '/', 1, c).rfind(',') + 1 or prompt_len(c) # a/b's last step, its digit first
    length = torch.tensor([len(problem_text(1, o, 1, c)) for o in OPS])[op]
    batches = []
    for n in length.unique():
        m = length == n
        x, y = inputs_and_targets(encode_problems(a[m], op[m], b[m], c, slip[m]), c)
        d = op[m] == OPS.index('/')
        if c.cot and d.any(): # a/b's target at the guess: the right last digit, slip or not
            y[d, guess_at - 1] = VOCAB.index('0') + (a[m][d] // b[m][d]) % 10
        batches.append((x.to(c.device), y.to(c.device))) # built on the CPU, moved once
    return batches


def loss_of(model, batches):
    """The mean loss over the characters that count, in all the batches."""
    total = sum(F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten(), ignore_index=-1, reduction='sum')
                for x, y in batches)
    return total / sum((y != -1).sum() for _, y in batches)


def eval_set(c):
    """Up to c.eval_problems held-out problems of each operation, the same every run, and a line saying how many
    there are: {op: (a, op, b)}, line."""
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
    sets = {}
    for o in c.ops:
        pick = held & (op == OPS.index(o))
        chosen = torch.randperm(int(pick.sum()), generator=g)[:c.eval_problems]
        sets[o] = tuple(t[pick][chosen] for t in (a, op, b))
    return sets, line

# ------------
# the model: gpt.py's, with a block just long enough for the longest problem

def build_model(c):
    block_size = max(len(problem_text(1, o, 1, c)) for o in c.ops) - 1 # the problem less its end mark
    return GPTLanguageModel(len(VOCAB), block_size, c.n_embd, c.n_head, c.n_layer, c.dropout).to(c.device)


@torch.no_grad()
def greedy(model, idx, n):
    """idx followed by the n likeliest next tokens, one at a time (argmax: no sampling)."""
    for _ in range(n):
        logits = model(idx)[0]
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@torch.no_grad()
def teacher_forced(model, problems, c):
    """The share of problems whose every character the model predicts right from the true characters before it: what
    greedy writes exactly right, trace included (each of its choices is then the true one), in one forward instead of
    one per step; greedy's answers c can be right more often (a guess the check mended)."""
    x, y = (t.to(c.device) for t in inputs_and_targets(encode_problems(*problems, c), c))
    model.eval()
    right = (model(x)[0].argmax(-1) == y) | (y == -1)
    model.train()
    return right.all(1).float().mean().item()


@torch.no_grad()
def evaluate(model, problems, op, c):
    """(share whose c is exactly right, greedy, the end mark included; share right at each character of c, ones first).
    Only c counts: a trace with a wrong guess that the check mended has the right answer."""
    data = encode_problems(*problems, c)[:, :len(problem_text(1, op, 1, c))].to(c.device)
    model.eval()
    out = greedy(model, data[:, :prompt_len(c)], data.size(1) - prompt_len(c))
    model.train()
    width = n_digits_of_c(op, c)
    right = out[:, -width - 1:] == data[:, -width - 1:]
    return right.all(1).float().mean().item(), right[:, :-1].float().mean(0).tolist()


def n_digits_of_c(op, c):
    return c.n_digits + 1 if op in '+-' else 2 * c.n_digits

# ------------
# training

def train(c):
    torch.manual_seed(c.seed)
    model = build_model(c)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, "
          f"n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} on {c.device}")
    problems, line = eval_set(c)
    print(line)
    print('for example ' + '  '.join(problem_text(57, o, 8, c) for o in c.ops))
    optimizer = gpt.configure_optimizer(model, c.learning_rate, c.weight_decay, c.beta2) # decay on matrices only
    t0 = shown = time.perf_counter()
    for it in range(c.max_iters):
        elapsed = time.perf_counter() - t0
        if it % c.eval_interval == 0 and it > 0:
            print(f"step {it} ({elapsed:.0f} s): loss {loss.item():.4f}, held-out exact: " +
                  ', '.join(f"a{o}b {teacher_forced(model, problems[o], c):.1%}" for o in c.ops))
        loss = loss_of(model, get_batch(c, c.batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups: # decayed over max_iters, or over max_time if more of it is spent
            group['lr'] = gpt.get_lr(it, c, elapsed / c.max_time if c.max_time > 0 else 0.0)
        optimizer.step()
        if time.perf_counter() - shown > 30: # a progress line on stderr, as gpt.py's in a log
            shown = time.perf_counter()
            print(f"step {it + 1}/{c.max_iters} | loss {loss.item():.4f} | {(it + 1) / (shown - t0):.1f} it/s"
                  + (f" | {c.max_time - (shown - t0):.0f} s left" if c.max_time > 0 else ''), file=sys.stderr)
        if c.max_time > 0 and time.perf_counter() - t0 >= c.max_time:
            break
    gpt.save_atomically(c.ckpt_path, {'model': model.state_dict(), 'config': vars(c)})
    print(f"trained in {time.perf_counter() - t0:.1f} s, {it + 1} steps, last loss {loss.item():.4f}; saved {c.ckpt_path}")
    for o in c.ops:
        exact, digits = evaluate(model, problems[o], o, c)
        print(f"a{o}b: {exact:.1%} of {len(problems[o][0]):,} held-out problems (per character of c, ones first: "
              + ' '.join(f'{100 * d:.1f}' for d in digits) + ')')

# ------------
# --ask: the calculator

def load(c):
    """The model at c.ckpt_path, and the config it was trained with."""
    try:
        ckpt = torch.load(c.ckpt_path, map_location='cpu', weights_only=True)
        trained = SimpleNamespace(**{**ckpt['config'], 'device': c.device})
        model = build_model(trained)
        model.load_state_dict(ckpt['model'])
    except FileNotFoundError:
        raise UsageError(f"no checkpoint at {c.ckpt_path}: train one first with 'python exercises/calculator.py'",
                         status=1) from None
    except Exception as e:
        raise UsageError(f"{c.ckpt_path} is not a readable calculator.py checkpoint ({e.__class__.__name__}): train "
                         "one with 'python exercises/calculator.py'", status=1) from None
    return model.eval(), trained


def answer(model, t, problem):
    """The line that answers one problem typed as we write it (123*45, 7/3): the model's answer, right or wrong, and
    what it wrote, trace included; a problem it cannot take is a UsageError."""
    m = re.fullmatch(r'\s*(\d+)\s*([-+*/])\s*(\d+)\s*=?\s*', problem)
    if not m:
        raise UsageError(f"{problem.strip()!r} is not a problem: type one like 123*45, 7/3 or 12-345")
    a, op, b = int(m[1]), m[2], int(m[3])
    if op not in t.ops:
        raise UsageError(f"this model learned {', '.join(f'a{o}b' for o in t.ops)}, not a{op}b")
    if max(a, b) >= 10**t.n_digits:
        raise UsageError(f"{max(a, b)} has more than {t.n_digits} digits, the most this model learned")
    if op == '/' and b == 0:
        raise UsageError(f"{a}/0 has no answer")
    truth = problem_text(a, op, b, t)
    n = prompt_len(t)
    idx = torch.tensor([encode(truth[:n])], device=t.device)
    wrote = decode(greedy(model, idx, len(truth) - n)[0, n:].tolist()).partition('$')[0] # up to the end mark
    said, right = as_we_write(wrote, op, t), as_we_write(truth[n:-1], op, t)
    verdict = 'right' if said == right else f"wrong: it is {right}"
    return f"{a}{op}{b} = {said}   {verdict}   (as written, ones first: {wrote})"


def as_we_write(wrote, op, t):
    """The answer at the end of what the model wrote (after the last '='), as we write it: 7 r 1 for 57/8, -11 for
    57-68 (989); '?' if it is not a number of the right width."""
    c = wrote.rpartition('=')[2][::-1]
    if len(c) != n_digits_of_c(op, t) or not c.isdigit():
        return '?'
    if op == '/':
        return f"{int(c[:t.n_digits])} r {int(c[t.n_digits:])}"
    return str(int(c) - 10**(t.n_digits + 1) if op == '-' and c[0] == '9' else int(c)) # 9...: below 0


def take_problems(c, interactive):
    model, trained = load(c)
    if not interactive:
        return print(answer(model, trained, c.ask))
    print(f"problems of up to {trained.n_digits} digits, {' '.join(trained.ops)}, one a line (Ctrl-D ends)")
    try:
        while True:
            line = input('> ' if sys.stdin.isatty() else '')
            if line.strip():
                try:
                    print(answer(model, trained, line))
                except UsageError as e: # one line, and the next problem
                    print(e)
    except (EOFError, KeyboardInterrupt): # Ctrl-D or Ctrl-C: the end, quietly
        print()

# ------------
# the command line: gpt.py's

def main(argv):
    if '-h' in argv or '--help' in argv:
        comments = dict(re.findall(r'^(\w+) = .*? # (.*)$', open(__file__, encoding='utf-8').read(), re.M))
        return print('\n'.join([__doc__.strip(), '', 'options (--name=value), with their defaults:'] +
                                [f"  {f'--{k}={v}':<26} {comments.get(k, '')}".rstrip() for k, v in OPTIONS.items()]))
    c, given = gpt.parse_args(argv, OPTIONS, 'exercises/calculator.py')
    gpt.check_config(SimpleNamespace(**{**gpt.HYPERPARAMETERS, **vars(c)})) # the options gpt.py has, as it checks them
    if not 1 <= c.n_digits <= 9:
        raise UsageError(f"--n_digits={c.n_digits} must be 1 to 9 (a*b must fit in 64 bits)")
    if not c.ops or set(c.ops) - set(OPS) or len(set(c.ops)) < len(c.ops):
        raise UsageError(f"--ops={c.ops!r} must be some of {OPS!r}, each once")
    if not 1 <= c.held_out <= 50:
        raise UsageError(f"--held_out={c.held_out} must be a percentage from 1 to 50")
    if not 0 <= c.slips < 1:
        raise UsageError(f"--slips={c.slips} must be in [0, 1)")
    if c.eval_problems <= 0:
        raise UsageError(f"--eval_problems={c.eval_problems} must be positive")
    if 'ask' in given: # --ask alone, or --ask= empty: read them line by line
        take_problems(c, interactive=not c.ask)
    else:
        train(c)


if __name__ == '__main__':
    gpt.run_command(main, 'calculator.py')
