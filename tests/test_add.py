"""exercises/add.py: how a problem is written, the held-out split, the masked loss, and a tiny model that learns
2-digit addition and answers from its checkpoint; the command line as a learner meets it."""
import re
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from conftest import run_script
from exercises import add

ADD = 'exercises/add.py'


def config(**given):
    return SimpleNamespace(**{**add.OPTIONS, 'device': 'cpu', **given})


def test_a_problem_is_a_and_b_padded_then_c_backwards_then_the_end_mark():
    two = config(n_digits=2)
    assert add.problem_text(57, '+', 68, two) == '57+68=521$' # 125, ones first
    assert add.problem_text(5, '+', 7, two) == '05+07=210$' # everything zero-padded: c to n_digits + 1
    assert add.problem_text(57, '+', 68, config(n_digits=2, reverse=False)) == '57+68=125$'
    assert add.problem_text(57, '-', 68, config(n_digits=2, ops='+-')) == '57-68=11-$' # -11: the sign comes last
    assert add.problem_text(68, '-', 57, config(n_digits=2, ops='+-')) == '68-57=110$'
    assert add.problem_text(57, '*', 68, config(n_digits=2, ops='+*')) == '57*68=6783$' # 3876: 2 * n_digits wide
    assert add.problem_text(5, '+', 7, config(n_digits=2, ops='+*')) == '05+07=2100$' # one width for all ops
    assert add.problem_text(999, '+', 999, config()) == '999+999=8991$'
    # 57/8 = 7 r 1: the quotient then the remainder, n_digits each (07 01), backwards as a whole
    assert add.problem_text(57, '/', 8, config(n_digits=2, ops='/')) == '57/08=1070$'
    assert add.problem_text(57, '/', 8, config(n_digits=2, ops='/', reverse=False)) == '57/08=0701$'
    # --cot: first a times each digit of b (57*8 = 456, 57*6 = 342), then c, each ones first
    assert add.problem_text(57, '*', 68, config(n_digits=2, ops='*', cot=True)) == '57*68=654+243=6783$'
    assert add.problem_text(57, '*', 68, config(n_digits=2, ops='*', cot=True, reverse=False)) == '57*68=456+342=3876$'


@pytest.mark.parametrize('mask', [True, False])
def test_the_loss_leaves_out_the_prompt_exactly_when_masked(mask):
    c = config(mask=mask)
    torch.manual_seed(0)
    x, y = add.get_batch(c, 32)
    P = add.prompt_len(c) # '123+456=': targets 0..P-2 are the prompt's characters, P-1 on c's and the end mark
    for row, target in zip(x.tolist(), y.tolist()):
        text = add.decode(row) + add.decode([target[-1]])
        assert re.fullmatch(r'\d{3}\+\d{3}=\d{4}\$', text) and add.decode(target[P - 1:]) == text[P:]
    assert ((y[:, :P - 1] == -1).all() if mask else (y >= 0).all()) and (y[:, P - 1:] >= 0).all()
    logits = add.build_model(c)(x)[0].detach()
    loss = add.loss_of(logits, y)
    other_prompt, other_answer = logits.clone(), logits.clone()
    other_prompt[:, :P - 1] = torch.randn_like(logits[:, :P - 1]) # other guesses at a, '+', b and '='
    other_answer[:, P - 1] = torch.randn_like(logits[:, P - 1]) # other guesses at c's first character
    assert (add.loss_of(other_prompt, y) == loss) == mask
    assert add.loss_of(other_answer, y) != loss
    if mask: # the mean over c's characters and the end mark, nothing else
        V = logits.size(-1)
        assert torch.allclose(loss, F.cross_entropy(logits[:, P - 1:].reshape(-1, V), y[:, P - 1:].reshape(-1)))


@pytest.mark.parametrize('n_digits, ops', [(1, '+'), (2, '+-*/')])
def test_held_out_problems_never_reach_a_training_batch(n_digits, ops):
    c = config(n_digits=n_digits, ops=ops)
    n = 10**n_digits
    every = {(a, op, b) for op in ops for a in range(n) for b in range(n) if op != '/' or b > 0} # not a/0
    held = {(a, op, b) for a, op, b in every if add.is_held_out(a, add.OPS.index(op), b, c)}
    assert 0.15 < len(held) / len(every) < 0.35 # held_out=25: about a quarter
    assert all((b, op, a) in held for a, op, b in held if op in '+*') # b+a would give a+b away
    seen = set()
    for _ in range(100):
        x, _ = add.get_batch(c, 256)
        for row in x.tolist():
            a, op, b = re.match(r'(\d+)([-+*/])(\d+)=', add.decode(row)).groups()
            seen.add((int(a), op, int(b)))
    assert not seen & held and seen <= every
    if n_digits == 1:
        assert seen == every - held # and every other problem is served
    # the test set: distinct held-out problems, all of them where there are fewer than eval_problems
    (a, op, b), line = add.eval_set(c)
    tested = {(a, add.OPS[op], b) for a, op, b in zip(a.tolist(), op.tolist(), b.tolist())}
    assert len(tested) == len(a) == min(len(held), c.eval_problems) and tested <= held
    assert f"{len(every):,} problems" in line and f"{len(held):,} of them held out" in line


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny model trained on 2-digit addition by the command, and its checkpoint."""
    path = tmp_path_factory.mktemp('add') / 'add.pt'
    # 99.9% or 100% by step 1000, 100% at 1500, seeds 1337 and 1 to 5 (one layer got stuck with seed 1: not the
    # smallest that might work, then)
    r = run_script(ADD, '--n_digits=2', '--n_layer=2', '--n_embd=32', '--batch_size=64', '--max_iters=1500',
                   '--max_time=0', '--eval_interval=500', '--device=cpu', f'--ckpt_path={path}')
    return r, path


def test_a_tiny_model_adds_two_digit_numbers_it_never_saw(trained):
    # (1-digit addition is no test of this: a model that saw 74 of the 100 facts does not guess the other 26)
    r, path = trained
    assert r.returncode == 0, r.stderr
    assert '10,000 problems (a+b with a, b < 100), 2,648 of them held out (26.5%)' in r.stdout
    assert re.search(r'^held-out exact match 100\.0% \(2,000 problems\); per character of c \(ones first\): '
                     r'100\.0 100\.0 100\.0$', r.stdout, re.M)
    assert path.exists()


def test_sample_answers_a_held_out_problem(trained):
    _, path = trained
    a, b = next((a, b) for a in range(50, 100) for b in range(50, 100) if add.is_held_out(a, 0, b, config(n_digits=2)))
    r = run_script(ADD, '--sample', f'--prompt={a}+{b}=', f'--ckpt_path={path}')
    assert r.returncode == 0, r.stderr
    assert r.stdout == f'{a}+{b}={a + b}\n' # written back the usual way round


def test_a_division_is_answered_as_quotient_and_remainder(tmp_path, capsys):
    path = tmp_path / 'div.pt'
    add.main(['--n_digits=1', '--ops=/', '--n_layer=1', '--n_embd=16', '--max_iters=20', '--max_time=0',
              '--eval_interval=100', '--device=cpu', f'--ckpt_path={path}'])
    assert '90 problems (a/b with a, b < 10)' in capsys.readouterr().out # b = 0 is not a problem
    add.main(['--sample', '--prompt=9/2=', f'--ckpt_path={path}'])
    said = capsys.readouterr().out # right or wrong after 20 steps, as we write it, and the truth when wrong
    assert re.fullmatch(r"9/2=(4 r 1|(\d+ r \d+|'.*' \(not a number\))  \(wrong: it is 4 r 1\))\n", said), said
    with pytest.raises(add.UsageError, match=r'b > 0 for /'):
        add.main(['--sample', '--prompt=9/0=', f'--ckpt_path={path}'])


@pytest.mark.parametrize('prompt, words', [
    ('5+x=', "characters the model never saw: 'x'"),
    ('5+7', "must be a problem like the checkpoint's, a+b= with a and b of up to 2 digits"),
    ('123+4=', 'of up to 2 digits'),
    ('5*7=', "an operation of '+'"),
])
def test_a_bad_prompt_is_refused(prompt, words, trained, capsys):
    # in this process, to save a start-up of torch each: the terminal's view of an error is checked below
    with pytest.raises(add.UsageError) as e:
        add.main(['--sample', f'--prompt={prompt}', f'--ckpt_path={trained[1]}'])
    assert e.value.status == 2 and words in str(e.value)
    assert capsys.readouterr().out == ''


def test_help_lists_the_options():
    r = run_script(ADD, '--help')
    assert r.returncode == 0 and r.stderr == ''
    for line in ['--n_digits=3', '--ops=+', '--reverse=True', '--mask=True', '--held_out=25', '--max_time=120.0',
                 '--sample=False', 'a and b have up to this many digits']:
        assert line in r.stdout


@pytest.mark.parametrize('arg, words', [
    ('--n_digits=x', "bad value 'x' for --n_digits: expected int like 3"),
    ('--n_digits=0', '--n_digits=0 must be positive'),
])
def test_a_bad_value_exits_2_with_one_line(arg, words, tmp_path):
    r = run_script(ADD, arg, f'--ckpt_path={tmp_path}/add.pt')
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr == f'add.py: error: {r.stderr[15:]}' and r.stderr.count('\n') == 1 and words in r.stderr
    assert 'Traceback' not in r.stderr and not (tmp_path / 'add.pt').exists()


@pytest.mark.parametrize('args, words', [
    (['--nope=1'], "unknown option '--nope=1'; valid names: n_digits, ops,"),
    (['--ops=%'], "--ops='%' must be some of '+-*/', each once"),
    (['--ops=++'], "--ops='++' must be some of '+-*/', each once"),
    (['--held_out=60'], '--held_out=60 must be a percentage from 1 to 50'),
    (['--cot'], '--cot writes the partial products of a*b: it needs --ops=*, not --ops=+'),
    (['--n_embd=30', '--n_head=4'], '--n_embd=30 must be divisible by --n_head=4'),
    (['--reverse=maybe'], "bad value 'maybe' for --reverse: expected bool"),
    (['--beta2=1'], '--beta2=1.0 must be in [0, 1)'),
    (['--weight_decay=-0.1'], '--weight_decay=-0.1 must be 0 or more'),
])
def test_bad_options_are_refused_before_training(args, words, tmp_path, capsys):
    with pytest.raises(add.UsageError) as e:
        add.main([*args, f'--ckpt_path={tmp_path}/add.pt'])
    assert e.value.status == 2 and words in str(e.value)
    assert capsys.readouterr().out == '' and not (tmp_path / 'add.pt').exists()


def test_a_checkpoint_into_a_missing_folder_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(add.UsageError, match=r'--ckpt_path=.*/none/add\.pt: no such folder; make it first'):
        add.main([f'--ckpt_path={tmp_path}/none/add.pt'])
    assert capsys.readouterr().out == '' and list(tmp_path.iterdir()) == []
