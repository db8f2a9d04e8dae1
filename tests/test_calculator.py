"""exercises/calculator.py: how each problem is written, chain of thought included; the held-out split; the masked
loss; a tiny model that learns 2-digit addition and answers through --ask; the command line as a learner meets it."""
import os
import re
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from conftest import run_script
from exercises import calculator as calc

CALC = 'exercises/calculator.py'


def config(**given):
    return SimpleNamespace(**{**calc.OPTIONS, 'device': 'cpu', **given})


def test_each_operation_is_written_as_the_docstring_shows():
    two = config(n_digits=2)
    for line in ['57+68=521$', '57-68=989$', '57*68=654+243=6783$', '57/08=0:000:50,7:650:1000=1070$',
                 '57/08=0:000:50,8:460:3999=1070$']:
        assert line in calc.__doc__ # the docstring shows these, and they are what the model reads
    assert calc.problem_text(57, '+', 68, two) == '57+68=521$' # 125, ones first
    assert calc.problem_text(57, '-', 68, two) == '57-68=989$' # -11: 1000-11, as an odometer shows it
    assert calc.problem_text(68, '-', 57, two) == '68-57=110$'
    # 51-44 and 41-54 start alike from 1-4 (7, borrow 1), whatever their signs; --ask reads -13 back
    assert calc.problem_text(51, '-', 44, two) == '51-44=700$' and calc.problem_text(41, '-', 54, two) == '41-54=789$'
    assert [calc.as_we_write(c, '-', two) for c in ('700', '789', '989', '109')] == ['7', '-13', '-11', '-99']
    assert calc.problem_text(57, '*', 68, two) == '57*68=654+243=6783$' # 456 and 342, then 3876
    assert calc.problem_text(57, '/', 8, two) == '57/08=0:000:50,7:650:1000=1070$' # 7 r 1: 07 and 01, ones first
    # a slip: 8 eights is 64, 7 too many (-7: 10000-7); c is 7 r 1 all the same
    assert calc.problem_text(57, '/', 8, two, slip=1) == '57/08=0:000:50,8:460:3999=1070$'
    assert calc.problem_text(5, '+', 7, two) == '05+07=210$' # zero-padded
    # 3 digits: 999*7 = 6993 + 0 + 0; 999/7: 9 is 1 seven, 2 left; 29 is 4, 1 left; 19 is 2, 5 left: 142 r 5
    three = config()
    assert calc.problem_text(999, '*', 7, three) == '999*007=3996+0000+0000=399600$'
    assert calc.problem_text(999, '/', 7, three) == '999/007=1:7000:200,4:8200:100,2:4100:50000=500241$'
    # without the chain of thought, c at once
    assert calc.problem_text(57, '*', 68, config(n_digits=2, cot=False)) == '57*68=6783$'
    assert calc.problem_text(57, '/', 8, config(n_digits=2, cot=False)) == '57/08=1070$'


def test_every_trace_adds_up():
    # what each step writes is what the answer needs: the partial products sum to a*b, and each step of the long
    # division leaves r = 10 * (the remainder before) + a's next digit - q*b, with 0 <= r < b; at the last step, a
    # guess one off (a slip) leaves r below 0 or b or more, which tells the right digit, and c is right all the same
    c = config()
    g = torch.Generator().manual_seed(0)
    for a, b in torch.randint(1000, (300, 2), generator=g).tolist():
        text = calc.problem_text(a, '*', b, c)
        partials = [int(p[::-1]) for p in text[8:].split('=')[0].split('+')]
        assert sum(p * 10**i for i, p in enumerate(partials)) == a * b
        if b == 0:
            continue
        for slip in (0, 1, -1):
            thought, answer = calc.problem_text(a, '/', b, c, slip)[8:-1].split('=')
            r, q = 0, 0
            for i, (digit, step) in enumerate(zip(f'{a:03d}', thought.split(','))):
                qi, product, left = step.split(':')
                remains = 10 * r + int(digit) - int(qi) * b
                assert int(product[::-1]) == int(qi) * b and int(left[::-1]) == remains % 10**len(left)
                r, q = int(left[::-1]) - (i == 2 and left[-1] == '9') * 10**len(left), 10 * q + int(qi) # 9: below 0
                assert r == remains
                assert (0 <= r < b) == (i < 2 or slip == 0) # a slip, and only a slip, leaves r out of [0, b)
            check = (r >= b) - (r < 0) # one more, one less, or the guess was right
            assert (q + check, r - check * b) == divmod(a, b) == (int(answer[:2:-1]), int(answer[2::-1]))


@pytest.mark.parametrize('n_digits, ops', [(1, '+'), (2, '+-*/')])
def test_held_out_problems_never_reach_a_training_batch(n_digits, ops):
    c = config(n_digits=n_digits, ops=ops)
    n = 10**n_digits
    every = {(a, op, b) for op in ops for a in range(n) for b in range(n) if op != '/' or b > 0} # not a/0
    held = {(a, op, b) for a, op, b in every if calc.is_held_out(a, calc.OPS.index(op), b, c)}
    assert 0.15 < len(held) / len(every) < 0.35 # held_out=25: about a quarter
    assert all((b, op, a) in held for a, op, b in held if op in '+*') # b+a would give a+b away
    for op in ops: # of each operation
        assert 0.15 < sum(p[1] == op for p in held) / sum(p[1] == op for p in every) < 0.35
    seen = set()
    for _ in range(100):
        for x, _ in calc.get_batch(c, 256):
            for row in x.tolist():
                a, op, b = re.match(r'(\d+)([-+*/])(\d+)=', calc.decode(row)).groups()
                seen.add((int(a), op, int(b)))
    assert not seen & held and seen <= every
    if n_digits == 1:
        assert seen == every - held # and every other problem is served
    # the test sets: distinct held-out problems of each operation, all of them where there are fewer
    sets, line = calc.eval_set(c)
    for op in ops:
        a, o, b = sets[op]
        tested = {(a, calc.OPS[o], b) for a, o, b in zip(a.tolist(), o.tolist(), b.tolist())}
        assert len(tested) == len(a) == min(sum(p[1] == op for p in held), c.eval_problems)
        assert tested <= held and {p[1] for p in tested} == {op}
    assert f"{len(every):,} problems" in line and f"{len(held):,} of them held out" in line


def test_the_loss_counts_the_answer_and_its_end_mark_only():
    # and at a slip, the guess in the input, the right digit in the target; c.slips of the divisions have one
    c = config(n_digits=2)
    torch.manual_seed(0)
    batches = calc.get_batch(c, 256)
    assert sorted(x.size(1) + 1 for x, _ in batches) == sorted({len(calc.problem_text(1, o, 1, c)) for o in "+-*/"})
    P = calc.prompt_len(c) # '12+34=': targets 0..P-2 are the prompt's characters
    divisions = slips = 0
    for x, y in batches:
        for row, target in zip(x.tolist(), y.tolist()):
            text = calc.decode(row) + calc.decode([target[-1]])
            counted = calc.decode([t for t in target if t >= 0])
            a, op, b = re.match(r'(\d+)([-+*/])(\d+)=', text).groups()
            right = calc.problem_text(int(a), op, int(b), c)
            if text != right:
                assert op == '/' and text in [calc.problem_text(int(a), op, int(b), c, s) for s in (-1, 1)]
            g = text.rfind(',') + 1 # a/b's last step, its digit first
            assert target[:P - 1] == [-1] * (P - 1) # the answer, then '$':
            assert counted == (text[P:g] + right[g] + text[g + 1:] if op == '/' else text[P:])
            divisions, slips = divisions + (op == '/'), slips + (text != right)
    assert 0.2 < slips / divisions < 0.4 # c.slips = 0.3
    model = calc.build_model(c)
    loss = calc.loss_of(model, batches)
    logits = [model(x)[0] for x, _ in batches]
    flat = torch.cat([l.flatten(0, 1) for l in logits]), torch.cat([y.flatten() for _, y in batches])
    assert torch.allclose(loss, F.cross_entropy(*flat, ignore_index=-1)) # the mean over every counted character


@pytest.mark.slow
def test_a_tiny_model_adds_two_digit_numbers_it_never_saw(added):
    out, path = added # (conftest.py: trained beside the other tests)
    assert '10,000 problems (a+b with a, b < 100), 2,648 of them held out (26.5%)' in out
    assert out.splitlines()[-1] == 'a+b: 100.0% of 2,000 held-out problems (per character of c, ones first: ' \
                                        '100.0 100.0 100.0)'
    assert os.path.exists(path)


@pytest.mark.slow
def test_teacher_forcing_counts_what_greedy_gets_exactly_right(added):
    # the check during training (one forward) and greedy answering (one per character) agree problem by problem,
    # on a model that is not yet perfect: the one of the fixture, its weights pushed off a little
    model, t = calc.load(SimpleNamespace(ckpt_path=added[1], device='cpu'))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    a, op, b = calc.eval_set(t)[0]['+']
    for i in range(300):
        one = (a[i:i + 1], op[i:i + 1], b[i:i + 1])
        assert calc.teacher_forced(model, one, t) == calc.evaluate(model, one, '+', t)[0]
    exact = calc.teacher_forced(model, (a, op, b), t)
    assert 0.05 < exact < 0.95 # both outcomes were tested


def ask(path, *lines, arg='--ask'):
    return run_script(CALC, arg, f'--ckpt_path={path}', '--device=cpu', input=''.join(line + '\n' for line in lines))


@pytest.mark.slow
def test_ask_answers_held_out_problems_and_says_which_are_right(added):
    _, path = added
    c = config(n_digits=2, ops='+')
    held = [(a, b) for a in range(50, 100) for b in range(50, 100) if calc.is_held_out(a, 0, b, c)][:3]
    r = ask(path, *(f'{a}+{b}' for a, b in held), f' {held[0][0]} + {held[0][1]} = ')
    assert r.returncode == 0 and r.stderr == ''
    lines = r.stdout.splitlines()
    assert lines[0] == 'problems of up to 2 digits, +, one a line (Ctrl-D ends)'
    for (a, b), line in zip(held + held[:1], lines[1:5]):
        assert line == f'{a}+{b} = {a + b}   right   (as written, ones first: {str(a + b)[::-1]})'
    assert lines[5:] == [''] # the end of the input ends it, quietly
    one = ask(path, arg=f'--ask={held[1][0]}+{held[1][1]}')
    assert one.returncode == 0 and one.stdout == lines[2] + '\n'


@pytest.mark.slow
def test_ask_takes_bad_problems_one_line_each_and_goes_on(added):
    _, path = added
    bad = {'hello': "'hello' is not a problem: type one like 123*45, 7/3 or 12-345",
           '1+2+3': "'1+2+3' is not a problem",
           '123+4': '123 has more than 2 digits, the most this model learned',
           '5*7': 'this model learned a+b, not a*b',
           '-5+3': "'-5+3' is not a problem"}
    r = ask(path, *bad, '12+34')
    assert r.returncode == 0 and r.stderr == ''
    lines = r.stdout.splitlines()[1:]
    assert len(lines) == len(bad) + 2 and 'Traceback' not in r.stdout
    for line, words in zip(lines, bad.values()):
        assert line.startswith(words)
    assert lines[-2].startswith('12+34 = ')
    # given one on the command line: the same line as an error, and the status of one
    one = ask(path, arg='--ask=5*7')
    assert one.returncode == 2 and one.stdout == '' and one.stderr == 'calculator.py: error: this model learned a+b, ' \
                                                                      'not a*b\n'


def test_a_division_by_zero_is_refused(tmp_path, capsys):
    path = tmp_path / 'div.pt'
    calc.main(['--n_digits=1', '--ops=/', '--n_layer=1', '--n_embd=16', '--max_iters=20', '--max_time=0',
               '--eval_interval=100', '--device=cpu', f'--ckpt_path={path}'])
    out = capsys.readouterr().out
    assert '90 problems (a/b with a, b < 10)' in out # b = 0 is not a problem
    assert re.search(r'^a/b: \d+\.\d% of \d+ held-out problems', out.splitlines()[-1])
    with pytest.raises(calc.UsageError, match=r'^9/0 has no answer$'):
        calc.main(['--ask=9/0', f'--ckpt_path={path}', '--device=cpu'])
    calc.main(['--ask=9/2', f'--ckpt_path={path}', '--device=cpu'])
    said = capsys.readouterr().out # right or wrong after 20 steps, as we write it, and the truth when wrong
    assert re.fullmatch(r"9/2 = (4 r 1   right|(\d+ r \d+|\?)   wrong: it is 4 r 1)   \(as written, ones first: .*\)\n",
                        said), said


@pytest.mark.slow
def test_ask_without_a_checkpoint_is_one_line(tmp_path):
    r = ask(tmp_path / 'none.pt', '1+2')
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr == f"calculator.py: error: no checkpoint at {tmp_path / 'none.pt'}: train one first with " \
                       "'python exercises/calculator.py'\n"


def test_an_empty_ask_reads_problems_and_never_trains_over_the_checkpoint(tmp_path):
    # --ask= (an empty shell variable, say) is --ask alone: the calculator, not ten minutes of training
    with pytest.raises(calc.UsageError, match='^no checkpoint at '):
        calc.main(['--ask=', f'--ckpt_path={tmp_path}/none.pt', '--max_iters=1', '--device=cpu'])
    assert os.listdir(tmp_path) == []


def test_help_lists_the_options(capsys):
    calc.main(['--help'])
    out = capsys.readouterr().out
    for line in ['--n_digits=3', '--ops=+-*/', '--cot=True', '--held_out=25', '--max_time=600.0', '--ask=',
                 'a and b have up to this many digits']:
        assert line in out


@pytest.mark.slow
@pytest.mark.parametrize('arg, words', [('--n_digits=0', '--n_digits=0 must be 1 to 9')])
def test_a_bad_value_exits_2_with_one_line(arg, words, tmp_path):
    # the terminal's view, once; the other refusals in this process, below
    r = run_script(CALC, arg, f'--ckpt_path={tmp_path}/calc.pt')
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.startswith('calculator.py: error: ') and r.stderr.count('\n') == 1 and words in r.stderr
    assert not (tmp_path / 'calc.pt').exists()


@pytest.mark.parametrize('args, words', [
    (['--nope=1'], "unknown hyperparameter '--nope=1'; valid names: n_digits, ops,"),
    (['--n_digits=x'], "bad value 'x' for --n_digits: expected int like 3"),
    (['--ops=%'], "--ops='%' must be some of '+-*/', each once"),
    (['--ops=++'], "--ops='++' must be some of '+-*/', each once"),
    (['--held_out=60'], '--held_out=60 must be a percentage from 1 to 50'),
    (['--n_embd=30', '--n_head=4'], '--n_embd=30 must be divisible by --n_head=4'),
    (['--cot=maybe'], "bad value 'maybe' for --cot: expected bool"),
    (['--beta2=1'], '--beta2=1.0 must be in [0, 1)'),
    (['--slips=1'], '--slips=1.0 must be in [0, 1)'),
    (['--weight_decay=-0.1'], '--weight_decay=-0.1 must be 0 or more'),
    (['--device=tpu'], "--device='tpu' must be 'cuda', 'cuda:N', 'mps' or 'cpu'"),
])
def test_bad_options_are_refused_before_training(args, words, tmp_path, capsys):
    with pytest.raises(calc.UsageError) as e:
        calc.main([*args, f'--ckpt_path={tmp_path}/calc.pt'])
    assert e.value.status == 2 and words in str(e.value)
    assert capsys.readouterr().out == '' and not (tmp_path / 'calc.pt').exists()


def test_a_checkpoint_into_a_missing_folder_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(calc.UsageError, match=r'--ckpt_path=.*/none/calc\.pt: no such folder; make it first'):
        calc.main([f'--ckpt_path={tmp_path}/none/calc.pt'])
    assert capsys.readouterr().out == '' and list(tmp_path.iterdir()) == []
