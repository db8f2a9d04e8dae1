"""The training run as gpt.py's main() runs it: what the loop really does, not what its helpers would do alone."""
import inspect
import os
import re
import shutil

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import gpt
from conftest import SHAKESPEARE, TINY, edited_gpt, train


@pytest.fixture
def optimizer_steps():
    """What the loop hands AdamW at every step: the learning rate of each group and the gradient's norm."""
    seen = []
    def record(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g['params'] if p.grad is not None]
        seen.append(([g['lr'] for g in optimizer.param_groups], torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])).item() if grads else None)) # None: skipped
    handle = register_optimizer_step_pre_hook(record)
    yield seen
    handle.remove()


def test_the_loop_sets_the_scheduled_rate_at_every_step_and_again_on_resume(tmp_path, optimizer_steps, capsys):
    recipe = ['--learning_rate=1e-2', '--warmup_iters=3', '--lr_decay=linear', '--max_new_tokens=0']
    ckpt = train(tmp_path, *recipe, '--max_iters=12', '--eval_interval=100')
    c = gpt.SimpleNamespace(learning_rate=1e-2, warmup_iters=3, lr_decay='linear', min_lr=0.0, max_iters=12)
    expected = [gpt.get_lr(it, c) for it in range(12)]
    assert [lrs for lrs, _ in optimizer_steps] == [[lr, lr] for lr in expected] # both groups, every step
    assert expected[2] == 1e-2 and expected[-1] < 2e-3 # it warmed up, then decayed
    del optimizer_steps[:]
    gpt.main(['--resume', f'--ckpt_path={ckpt}', f'--input_path={TINY}', '--max_iters=20', '--max_new_tokens=0',
              '--device=cpu'])
    c.max_iters = 20 # a larger max_iters: the rate decays again, to zero at the new end
    assert [lrs[0] for lrs, _ in optimizer_steps] == [gpt.get_lr(it, c) for it in range(12, 20)]


@pytest.mark.parametrize('dtype', ['float32', 'float16']) # float16: clipped once divided by the loss's scale
def test_the_loop_clips_the_gradient(dtype, tmp_path, optimizer_steps, capsys):
    train(tmp_path, '--grad_clip=0', '--max_iters=5', '--max_new_tokens=0', f'--dtype={dtype}')
    unclipped = [norm for _, norm in optimizer_steps if norm is not None] # (None: a float16 overflow, skipped)
    del optimizer_steps[:]
    train(tmp_path, '--grad_clip=0.05', '--max_iters=5', '--max_new_tokens=0', f'--dtype={dtype}')
    clipped = [norm for _, norm in optimizer_steps if norm is not None]
    assert len(unclipped) >= 4 and min(unclipped) > 0.1 # the gradient as the loss has it, without clipping...
    assert len(clipped) >= 4 and all(0.05 * (1 - 1e-3) < norm <= 0.05 * (1 + 1e-4) for norm in clipped) # ...and with


def test_weight_decay_goes_to_the_matrices_only(tmp_path, capsys):
    ckpt = torch.load(train(tmp_path, '--max_iters=1', '--max_new_tokens=0', '--weight_decay=0.3'))
    decay, no_decay = ckpt['optimizer']['param_groups']
    assert (decay['weight_decay'], no_decay['weight_decay']) == (0.3, 0.0)
    shapes = {i: state['exp_avg'].shape for i, state in ckpt['optimizer']['state'].items()}
    model = ckpt['model']
    assert sorted(decay['params'] + no_decay['params']) == list(range(len(model))) # each in exactly one group
    assert all(len(shapes[i]) == 2 for i in decay['params']) # the matrices, embeddings included...
    assert all(len(shapes[i]) == 1 for i in no_decay['params']) # ...and not the biases and LayerNorm gains
    assert len(decay['params']) == sum(w.dim() == 2 for w in model.values())


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_training_runs_under_autocast_where_it_is_on(dtype, tmp_path, capsys):
    # a GPU trains and evaluates under bf16 autocast (float16 below compute capability 8.0), and samples in fp32;
    # --dtype= asks a CPU for the same: the real loop runs
    seen = []
    def record(module, args, out):
        if isinstance(module, gpt.GPTLanguageModel):
            seen.append((module.training, args[1] is not None if len(args) > 1 else False, out[0].dtype))
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        train(tmp_path, '--max_iters=3', '--eval_interval=100', '--eval_iters=1', '--max_new_tokens=2',
              f'--dtype={dtype}', '--eval_sample=3')
    finally:
        handle.remove()
    trained = [dtype for training, targets, dtype in seen if training and targets]
    evaluate = [dtype for training, targets, dtype in seen if not training and targets]
    generate = [dtype for _, targets, dtype in seen if not targets]
    assert trained == [getattr(torch, dtype)] * 3
    assert evaluate[:4] == [getattr(torch, dtype)] * 4 # two evaluations (steps 0 and 2), one batch of each split
    assert evaluate[4:] == [torch.float32] # then the whole val split, at the end, with the sample's model
    assert generate == [torch.float32] * (2 * 3 + 2) # the writes lines (3 characters, twice), the sample: float32
    assert f'  dtype={dtype} (as given)' in capsys.readouterr().out


def test_the_end_reports_the_saved_models_loss_on_the_whole_val_split(tmp_path, capsys):
    ckpt = torch.load(train(tmp_path, '--max_iters=20', '--eval_interval=100', '--max_new_tokens=0'))
    reported = re.search(r'^val loss on the whole val split \((\d+) windows of 16 characters\): (\d\.\d{4})$',
                         capsys.readouterr().out, re.M)
    text = open(TINY, encoding='utf-8').read()
    val = torch.tensor(gpt.tokenizer(ckpt['chars'])[0](text[int(0.9 * len(text)):]))
    model = gpt.GPTLanguageModel(len(ckpt['chars']), 16, 32, 2, 2)
    model.load_state_dict(ckpt['model'])
    windows = [(val[i:i + 16], val[i + 1:i + 17]) for i in range(0, len(val) - 16, 16)] # every character once
    with torch.no_grad():
        mean = sum(model(x[None], y[None])[1].item() for x, y in windows) / len(windows)
    assert int(reported.group(1)) == len(windows) == (len(val) - 1) // 16
    assert float(reported.group(2)) == pytest.approx(mean, abs=1e-4)


def test_the_whole_split_loss_read_in_chunks_is_the_mean_over_every_character():
    # at block_size 128, 256 windows at a time: Tiny Shakespeare's val split is 871 windows, the last chunk 103
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 128, 32, 2, 1).eval()
    val = torch.tensor(gpt.tokenizer(sorted(set(text := open(SHAKESPEARE, encoding='utf-8').read())))[0](
        text[int(0.9 * len(text)):]))
    n = (len(val) - 1) // 128
    with torch.no_grad(): # every window in one batch: the mean over all of their characters
        mean = model(val[:n * 128].view(n, 128), val[1:n * 128 + 1].view(n, 128))[1].item()
    assert n == 871 and gpt.whole_split_loss(model, val, 128) == pytest.approx(mean, abs=1e-5)


def test_estimate_loss_evaluates_without_dropout_and_leaves_training_on():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(11, 8, 32, 4, 1, dropout=0.5)
    splits = {'train': torch.randint(11, (200,)), 'val': torch.randint(11, (200,))}
    torch.manual_seed(1)
    losses = gpt.estimate_loss(model, splits, 3, 4, 8, 'cpu')
    assert model.training and all(m.training for m in model.modules()) # back to training for the next step
    torch.manual_seed(1) # the same batches, by hand, in evaluation mode (no dropout)
    model.eval()
    with torch.no_grad():
        by_hand = {s: sum(model(*gpt.get_batch(d, 4, 8, 'cpu'))[1].item() for _ in range(3)) / 3 for s, d in splits.items()}
    assert losses == pytest.approx(by_hand, abs=1e-6)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        assert model(*gpt.get_batch(splits['train'], 4, 8, 'cpu'))[1].item() != pytest.approx(by_hand['train'], abs=1e-3)


def test_bench_times_training_steps_and_writes_nothing(tmp_path, optimizer_steps, capsys):
    train(tmp_path, '--bench', '--bench_iters=3')
    out = capsys.readouterr().out
    assert re.search(r'^bench: \d+\.\d ms/iter \| \d+\.\dk tok/s$', out, re.M), out
    assert len(optimizer_steps) == 2 + 3 # two to warm up, three timed
    assert 'step ' not in out and os.listdir(tmp_path) == [] # no evaluation, no checkpoint, no history


def test_a_log_gets_a_progress_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpt, 'PROGRESS_EVERY', 0) # a line at every step instead of every 30 s
    train(tmp_path, '--max_iters=4', '--eval_interval=100', '--max_new_tokens=0')
    err = capsys.readouterr().err
    lines = re.findall(r'^step (\d)/4 \| loss \d\.\d{4} \| \d+\.\d\d it/s \| \d+\.\dk tok/s \| 0m\d\ds left$', err, re.M)
    assert lines == ['1', '2', '3', '4'], err


def test_the_time_left_never_goes_below_zero_once_max_time_has_run_out(tmp_path, monkeypatch, clock, capsys):
    # max_time ends the run one evaluation and step after it runs out: those steps' lines said -1m59s left
    monkeypatch.setattr(gpt, 'PROGRESS_EVERY', 0)
    train(tmp_path, '--max_time=1', '--max_iters=100000', '--eval_interval=100000', '--max_new_tokens=0')
    left = re.findall(r'^step \d+/100000 \| .* \| (-?\d+)m(\d\d)s left$', capsys.readouterr().err, re.M)
    assert len(left) >= 10 and left[-1] == ('0', '00') and all(m[0] == '0' for m in left), left


def test_checkpoints_are_saved_when_val_improves_and_at_the_end(tmp_path, monkeypatch, capsys):
    saves = []
    save = gpt.Run.save
    def record(run, iter):
        saves.append((iter, run.best_val_loss))
        save(run, iter)
    monkeypatch.setattr(gpt.Run, 'save', record)
    # one batch an estimate: noisy enough that some evaluations come out worse than an earlier one
    ckpt = train(tmp_path, '--max_iters=30', '--eval_interval=2', '--eval_iters=1', '--max_new_tokens=0')
    rows = [line.split(',') for line in (tmp_path / 'gpt.csv').read_text().splitlines()[1:]]
    vals = [(int(step), float(val)) for step, _, val, _ in rows]
    saved = [it for it, _ in saves]
    assert saved[-1] == 30 # the end saves whatever it has
    worse = 0
    for i, (step, val) in enumerate(vals[1:], 1):
        best_before = min(v for _, v in vals[:i])
        if val < best_before - 1e-4: # (the history rounds to 4 decimals: closer calls are left out)
            assert step in saved, step
        elif val > best_before + 1e-4:
            assert step not in saved, step
            worse += 1
    assert worse >= 1 # the run did have an evaluation that was no better
    best = min(val for _, val in vals)
    assert saves[-1][1] == pytest.approx(best, abs=1e-4) and gpt.load_checkpoint(str(ckpt))['iter'] == 30
    assert best < vals[0][1] - 0.05 # it learned: the best is clearly below the first estimate


@pytest.mark.parametrize('config, device, given, expect', [
    ('auto', 'cpu', {}, dict(small=True)),
    ('auto', 'mps', {}, dict(small=True)),
    ('auto', 'cuda', {}, dict(small=False)),
    ('small', 'cuda', {}, dict(small=True)),
    ('lecture', 'cpu', {}, dict(small=False)),
    ('auto', 'cpu', {'learning_rate': 1e-3}, dict(small=True, learning_rate=1e-3)),
    ('auto', 'cpu', {'n_layer': 2}, dict(small=True, n_layer=2, n_head=6, n_embd=384, block_size=256)), # a shape: whole
])
def test_config_chooses_the_small_values_and_keeps_what_was_given(config, device, given, expect):
    c = gpt.SimpleNamespace(**dict(gpt.HYPERPARAMETERS, config=config, device=device, **given))
    which, notes = gpt.choose_config(c, set(given))
    assert which == ('small' if expect.pop('small') else 'lecture')
    for name in gpt.small:
        want = expect.get(name, gpt.small[name] if which == 'small' else gpt.LECTURE[name])
        assert getattr(c, name) == want, name
    assert not any('as edited' in note for note in notes)
    assert not any(name in note for name in given for note in notes if 'replaced' in note)
    assert any('kept whole, the shape' in note for note in notes) == ('n_layer' in given)


def test_the_lectures_values_are_what_the_block_at_the_top_ships():
    assert gpt.LECTURE == {name: gpt.HYPERPARAMETERS[name] for name in gpt.LECTURE}
    assert set(gpt.LECTURE) == set(gpt.small)


def test_an_edit_at_the_top_of_gpt_py_is_what_runs(tmp_path, capsys):
    # a learner's first move: edit the block at the top, run python gpt.py (here on a CPU, with the small configuration)
    edits = [('max_iters = 5000 #', 'max_iters = 3 #'), ('eval_iters = 200 #', 'eval_iters = 2 #')]
    edited = edited_gpt(tmp_path, edits, within=None)
    shutil.copy(TINY, tmp_path / 'input.txt') # beside the edited gpt.py, where it reads its text
    edited.main(['--device=cpu', '--max_new_tokens=20', '--eval_sample=0'])
    out = capsys.readouterr().out
    source = (tmp_path / 'edited.py').read_text(encoding='utf-8')
    first = out.splitlines()[1:4]
    assert first[0].startswith('config small on cpu: n_layer=4 n_head=4 n_embd=128 block_size=128 batch_size=16 '
                               'max_iters=3 learning_rate=0.002'), first
    line = next(i for i, l in enumerate(source.splitlines(), 1) if l.startswith('small = dict('))
    assert first[1].startswith(f"  on cpu, the small configuration (gpt.py line {line}) replaced the lecture's "
                               "n_layer, n_head, n_embd, block_size, batch_size, max_time, eval_interval, "
                               "dropout"), first
    assert first[2] == '  as edited at the top of gpt.py: max_iters=3 eval_iters=2'
    assert re.findall(r'^step (\d+):', out, re.M) == ['0', '2'] # 3 steps, not 10,000
    assert torch.load(tmp_path / 'gpt.pt')['config']['max_iters'] == 3


def test_an_edited_width_keeps_the_lectures_shape_whole(tmp_path):
    # small's n_head=4 beside an edited n_embd = 390 would not divide it: none of the shape is replaced, and it says so
    edited = edited_gpt(tmp_path, [('n_embd = 384 #', 'n_embd = 390 #')], within=None) # the top of gpt.py, edited
    c, given = edited.parse_args(['--device=cpu'])
    which, notes = edited.choose_config(c, given)
    edited.check_config(c) # (no '--n_embd=390 must be divisible by --n_head=4')
    assert (which, c.n_layer, c.n_head, c.n_embd, c.block_size) == ('small', 6, 6, 390, 256)
    assert (c.batch_size, c.learning_rate, c.max_time) == (16, 2e-3, 570.0) # the rest of small, as before
    assert "replaced the lecture's batch_size, max_iters, max_time" in notes[0] and 'n_head' not in notes[0]
    assert notes[1:] == ['kept whole, the shape you edited or gave: block_size=256 n_embd=390 n_head=6 n_layer=6']


@pytest.mark.parametrize('flag', ['--help', '-h'])
def test_help_lists_every_hyperparameter_with_its_default_and_comment(flag, capsys):
    gpt.main([flag])
    out = capsys.readouterr().out
    assert 'python gpt.py --sample --prompt="ROMEO:"' in out # the docstring's commands
    for name, default in gpt.HYPERPARAMETERS.items():
        assert re.search(rf'^  --{name}={re.escape(str(default))}( |$)', out, re.M), name
    assert re.search(r'^  --batch_size=64 +how many independent sequences will we process in parallel\?$', out, re.M)
    assert re.search(r'^  --top_k=0 +sample from the k likeliest characters only; 0: no cutoff$', out, re.M)


def test_max_time_stops_the_run_with_the_rate_decayed_to_its_end(tmp_path, optimizer_steps, clock, capsys):
    # a budget of 3 s (30 steps on the test's clock) for a run that max_iters would make 10,000 steps: time decides,
    # and the schedule with it
    ckpt = train(tmp_path, '--max_time=3', '--max_iters=10000', '--eval_interval=1000000', '--warmup_iters=2',
                 '--max_new_tokens=0')
    out = capsys.readouterr().out
    assert 'max_iters=10000 learning_rate=0.002 max_time=3s' in out # the first lines state the budget
    steps = int(re.search(r'^trained in [\d.]+ s, (\d+) steps \(max_time reached\)', out, re.M).group(1))
    assert re.findall(r'^step (\d+):', out, re.M) == ['0', str(steps - 1)] # the last step is evaluated, as at max_iters
    saved = torch.load(ckpt)
    assert saved['iter'] == steps and 30 <= steps <= 32 and saved['elapsed'] >= 3
    lrs = [lrs[0] for lrs, _ in optimizer_steps]
    assert len(lrs) == steps and lrs[-1] == 0.0 # linear decay to min_lr: all the way, at the end of the budget
    assert 0 < lrs[len(lrs) // 2] < 2e-3 # on the way down, halfway through


def test_the_schedule_follows_the_larger_share_of_max_iters_and_max_time():
    c = gpt.SimpleNamespace(learning_rate=1e-3, warmup_iters=10, lr_decay='linear', min_lr=0.0, max_iters=110)
    assert gpt.get_lr(60, c) == pytest.approx(5e-4) # steps alone: halfway down at step 60
    assert gpt.get_lr(20, c, done=60 / 110) == pytest.approx(5e-4) # at step 20, with 60/110 of the time spent
    assert gpt.get_lr(20, c, done=1.0) == 0.0 and gpt.get_lr(5, c, done=1.0) == pytest.approx(6e-4) # warmup: steps
    c.lr_decay = 'cosine'
    assert gpt.get_lr(30, c, done=60 / 110) == pytest.approx(5e-4) # cosine is halfway at the middle too


def test_resume_of_a_spent_budget_asks_for_more_then_carries_on_the_time_spent(tmp_path, clock, capsys):
    ckpt = train(tmp_path, '--max_time=2', '--max_iters=10000', '--eval_interval=1000000', '--max_new_tokens=0')
    spent, steps = torch.load(ckpt)['elapsed'], torch.load(ckpt)['iter']
    before = ckpt.read_bytes()
    # the budget is spent: one line that says what to give, not a step or two of training
    with pytest.raises(gpt.UsageError) as e:
        gpt.main(['--resume', f'--ckpt_path={ckpt}', f'--input_path={TINY}', '--max_iters=20000'])
    assert str(e.value) == (f"{ckpt} has reached {spent:.0f} s of --max_time=2: to train on, give a larger budget, "
                            f"e.g. --resume --max_time={spent + 2:.0f}")
    assert ckpt.read_bytes() == before
    capsys.readouterr()
    gpt.main(['--resume', f'--ckpt_path={ckpt}', f'--input_path={TINY}', f'--max_time={spent + 1}',
              '--max_new_tokens=0', '--device=cpu'])
    out = capsys.readouterr().out
    assert f'from step {steps} of {ckpt}; {spent:.1f} s of it spent before' in out
    assert re.search(r'^trained in [\d.]+ s, \d+ steps \(max_time reached\)', out, re.M), out
    assert torch.load(ckpt)['elapsed'] >= spent + 1 # a second more: the time given, less the time spent


def test_resume_at_max_iters_asks_for_more_steps(tmp_path, capsys):
    ckpt = train(tmp_path, '--max_iters=3', '--max_new_tokens=0')
    with pytest.raises(gpt.UsageError, match=r'has reached step 3 of --max_iters=3: to train on, give a larger '
                                             r'budget, e\.g\. --resume --max_iters=6$'):
        gpt.main(['--resume', f'--ckpt_path={ckpt}', f'--input_path={TINY}'])


MHA = "        wei = q @ k.transpose(-2,-1) * k.shape[-1]**-0.5 # (B, nh, T, hs) @ (B, nh, hs, T) -> (B, nh, T, T)\n"
SOFTMAX = "        wei = F.softmax(wei, dim=-1) # (B, nh, T, T)\n"
END = "        out = self.dropout(self.proj(out))\n        return out\n"
EDITS = { # a learner's edits of MultiHeadAttention: [(a line as shipped, what it becomes)]
    'mask removed': [("        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf')) # (B, nh, T, T)\n",
                      '')],
    'scaled by C': [(MHA, MHA.replace('k.shape[-1]**-0.5', 'C**-0.5'))],
    'dropout moved': [("        wei = self.attn_dropout(wei)\n        out = wei @ v",
                       "        out = wei @ self.attn_dropout(v)")],
    'q and k swapped': [("        q, k, v = self.qkv(x).chunk(3, dim=-1)",
                         "        k, q, v = self.qkv(x).chunk(3, dim=-1)")],
    'a learned bias, zero at first': [
        ("        self.proj = nn.Linear(num_heads * head_size, n_embd)\n",
         "        self.proj = nn.Linear(num_heads * head_size, n_embd)\n"
         "        self.bias = nn.Parameter(torch.zeros(block_size, block_size))\n"),
        (MHA, MHA + "        wei = wei + self.bias[:T, :T]\n")],
    'a mask made in __init__, a window of 40': [
        ("torch.tril(torch.ones(block_size, block_size)), persistent=False)",
         "torch.tril(torch.ones(block_size, block_size)).triu(-39), persistent=False)")],
    'wei renamed': [('wei', 'att')], # the same computation, another name: as written too
    'a print': [(SOFTMAX, SOFTMAX + "        print('wei', tuple(wei.shape), self.training)\n")],
    'wei kept to plot': [(SOFTMAX, SOFTMAX + "        self.wei = wei\n")],
    # before Python 3.13, inspect finds the source of the first class of a name: the shipped one, above the copy
    'wei kept, in a copy below the class': [(END, END + '\n\n' + inspect.getsource(gpt.MultiHeadAttention).replace(
        SOFTMAX, SOFTMAX + "        self.wei = wei\n"))],
}


@pytest.fixture
def attention_calls():
    """Each forward of an attention module: (its class, training?, whether it keeps a wei of its own after)."""
    calls = []
    def record(module, args, out):
        if type(module).__name__ in ('MultiHeadAttention', 'FusedAttention'):
            calls.append((type(module).__name__, module.training, hasattr(module, 'wei')))
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    yield calls
    handle.remove()


@pytest.mark.parametrize('edit', [*EDITS, None], ids=[*EDITS, 'as shipped'])
def test_an_edited_attention_runs_as_written_in_training_and_evaluation(edit, tmp_path, attention_calls, capsys):
    # what part one says is what trains: the fused kernel runs the class as shipped only (its code's fingerprint)
    module = edited_gpt(tmp_path, EDITS[edit]) if edit else gpt
    train(tmp_path, '--max_iters=3', '--eval_interval=100', '--eval_iters=1', '--max_new_tokens=2', '--dropout=0.1',
          script=module)
    out = capsys.readouterr().out
    training = [(kind, keeps) for kind, train, keeps in attention_calls if train]
    evaluation = [(kind, keeps) for kind, train, keeps in attention_calls if not train]
    kind, keeps = ('MultiHeadAttention' if edit else 'FusedAttention'), 'wei kept' in (edit or '')
    assert training == [(kind, keeps)] * 3 * 2 # every step, both blocks
    assert evaluation[:2 * 2 * 2] == [(kind, keeps)] * 8 # steps 0 and 2, each split, both blocks
    assert {kind for kind, _ in evaluation[8:]} == {'MultiHeadAttention'} # the whole val split and the sample
    assert ('  attention: MultiHeadAttention as edited, run as written' in out) == bool(edit)
    assert ('  attention: MultiHeadAttention as shipped, run by the fused kernel' in out) == (not edit)
    if edit == 'a print': # the learner's line, at every step and every evaluation
        assert out.count('wei (8, 2, 16, 16) True\n') == 3 * 2 and out.count('wei (8, 2, 16, 16) False\n') == 8


def test_a_model_with_heads_alone_says_its_own_code_runs(tmp_path, capsys):
    # the lecture at 01:19:11, one Head where the block's attention goes: no MultiHeadAttention to fuse, nor to name
    edited = edited_gpt(tmp_path, [('MultiHeadAttention(n_embd, n_head, head_size, block_size, dropout)',
                                    'Head(n_embd, n_embd, block_size, dropout)')], within=('class Block', 'class GPT'))
    train(tmp_path, '--max_iters=2', '--eval_interval=100', '--eval_iters=1', '--max_new_tokens=0', script=edited)
    assert "\n  attention: MultiHeadAttention not in the model: part one's own code runs as written\n" in \
        capsys.readouterr().out


def test_removing_the_causal_mask_in_part_one_lets_the_future_leak_into_training(tmp_path, capsys):
    # the lecture's experiment, made where a learner makes it: the masked_fill line out of MultiHeadAttention.forward
    losses = {}
    for name, module in [('shipped', gpt), ('edited', edited_gpt(tmp_path, EDITS['mask removed']))]:
        train(tmp_path, '--block_size=8', '--batch_size=16', '--eval_iters=10', '--learning_rate=1e-2',
              '--max_iters=200', '--eval_interval=1000', '--warmup_iters=10', '--max_new_tokens=0', script=module,
              ckpt=f'{name}.pt')
        losses[name] = float(re.findall(r'^step 199: train loss (\d+\.\d+)', capsys.readouterr().out, re.M)[0])
    # each position sees the character it must predict: the loss falls far below the honest model's
    assert losses['edited'] < losses['shipped'] - 1.0, losses


def test_a_run_that_diverges_stops_at_the_evaluation_that_finds_it_in_one_line(tmp_path, capsys):
    # a learner trying a far larger rate: the weights overflow, the loss is nan, and nothing can be sampled from them
    with pytest.raises(gpt.UsageError) as e:
        train(tmp_path, '--learning_rate=1e30', '--max_iters=20', '--eval_interval=5', '--eval_sample=20')
    assert e.value.status == 1
    assert str(e.value) == 'step 5: the loss is nan, training diverged: lower --learning_rate (here 1e+30)'
    assert capsys.readouterr().out.splitlines()[-1] == 'step 5: train loss nan, val loss nan' # no writes: line


def test_a_lecture_line_reading_the_names_at_the_top_gets_the_values_that_run(tmp_path, capsys):
    # the lecture's generate crops the context with block_size, the name at the top (256 there): here the run's 16
    edited = edited_gpt(tmp_path, [('idx[:, -self.block_size:]', 'idx[:, -block_size:]')],
                        within=('class GPTLanguageModel', 'def train(c, run)'))
    run = ['--max_iters=2', '--eval_interval=100', '--eval_sample=40', '--max_new_tokens=40']
    ckpt = train(tmp_path, *run, script=edited)
    assert edited.block_size == 16 and edited.max_iters == 2 and edited.n_embd == 32
    out = re.sub(r'trained in [\d.]+ s', '', capsys.readouterr().out)
    train(tmp_path, *run, ckpt='shipped.pt')
    assert re.sub(r'trained in [\d.]+ s', '', capsys.readouterr().out).replace('shipped.', 'gpt.') == out # the same
    edited.main(['--sample', f'--ckpt_path={ckpt}', '--prompt=ROMEO:', '--max_new_tokens=30', '--device=cpu'])
    assert capsys.readouterr().out.startswith('ROMEO:') and edited.block_size == 16


def test_a_lecture_style_class_reading_n_embd_at_the_top_samples_from_its_own_checkpoint(tmp_path, capsys):
    # the lecture's FeedForward takes no width: it reads n_embd at the top. Trained at the run's 32, and sampled from
    # by a gpt.py just imported (n_embd = 384 there, as written), which builds it at the checkpoint's width
    edit = [('def __init__(self, n_embd, dropout):', 'def __init__(self, width, dropout):')]
    ckpt = train(tmp_path, '--max_iters=2', '--eval_interval=100', '--max_new_tokens=0',
                 script=edited_gpt(tmp_path, edit, within=('class FeedForward', 'class Block')))
    fresh = edited_gpt(tmp_path, edit, within=('class FeedForward', 'class Block'))
    assert fresh.n_embd == 384
    fresh.main(['--sample', f'--ckpt_path={ckpt}', '--prompt=ROMEO:', '--max_new_tokens=5', '--device=cpu'])
    assert capsys.readouterr().out.splitlines()[-1].startswith('ROMEO:')
