import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

torch.set_num_threads(1) # the models here are too small to gain from a second: it is left to what runs beside

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, 'tests', 'tiny.txt') # the first 8,000 characters of Tiny Shakespeare
SHAKESPEARE = os.path.join(ROOT, 'input.txt')
sys.path.insert(0, ROOT)

import gpt # noqa: E402 (after ROOT is on the path)

# a model small enough to train in seconds on a laptop CPU
TINY_GPT = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=8',
            '--eval_iters=2', '--max_new_tokens=20', '--eval_sample=0', '--device=cpu']


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: seconds each (real training, several processes); '
                                       'python -m pytest -q tests -m "not slow" leaves them out')
    config.addinivalue_line('markers', 'loss_picture: gpt.py draws its loss curves in this test (in this process)')


@pytest.fixture(autouse=True)
def no_loss_picture(request, monkeypatch):
    """The loss picture costs 0.15 s a run (matplotlib), in a suite of about a hundred runs in this process: it is
    drawn where a test asks for it (@pytest.mark.loss_picture), and by every script run in a subprocess."""
    if 'loss_picture' not in request.keywords:
        monkeypatch.setattr(gpt, 'plot_history', lambda history: None)


def train(tmp_path, *args, script=gpt, ckpt='gpt.pt'):
    """gpt.py's main (or another script's: exercises/muon.py's, an edited gpt.py) in this process, on the tiny text
    with the tiny model, args after those (a later --name= wins): the checkpoint's path."""
    script.main([*TINY_GPT, f'--input_path={TINY}', f'--ckpt_path={tmp_path / ckpt}', *args])
    return tmp_path / ckpt


def edited_gpt(tmp_path, edits, within=('class MultiHeadAttention', 'class FeedForward')):
    """gpt.py edited as a learner would (its MultiHeadAttention, unless within=None), imported: a module of its own."""
    source = open(os.path.join(ROOT, 'gpt.py'), encoding='utf-8').read()
    start, end = (source.index(within[0]), source.index(within[1])) if within else (0, len(source))
    cls = source[start:end]
    for old, new in edits:
        assert old in cls and (old == 'wei' or cls.count(old) == 1)
        cls = cls.replace(old, new)
    (tmp_path / 'edited.py').write_text(source[:start] + cls + source[end:], encoding='utf-8')
    spec = importlib.util.spec_from_file_location(f'edited_{tmp_path.name}', tmp_path / 'edited.py')
    edited = sys.modules[spec.name] = importlib.util.module_from_spec(spec) # where inspect finds its classes' code
    spec.loader.exec_module(edited)
    edited.plot_history = gpt.plot_history # as no_loss_picture left gpt.py's: drawn only where a test asks for it
    return edited


def run_script(script, *args, cwd=None, timeout=120, env=None, **kwargs):
    """Run bigram.py, gpt.py or another script of ours as a user would, in a real subprocess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd or ROOT,
                          capture_output=True, timeout=timeout, **{'text': True, **kwargs},
                          env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})


# Long runs that need nothing from the other tests start in a subprocess as soon as a test that needs them is
# collected, and run beside the others (which take one thread): the calculator's, needed early, as they do; the
# replay, needed last, at a lower priority, on the time the tests leave, then on every core. Their fixture waits.
CALC = os.path.join(ROOT, 'exercises', 'calculator.py')
BESIDE = { # fixture name: the command, run in a folder of its own ({folder})
    'replayed': [sys.executable, '-c', 'import json, os, sys; hasattr(os, "nice") and os.nice(10); '
                 'sys.path.insert(0, sys.argv[1]); import replay; '
                 'json.dump(replay.main(gpu=False), open(sys.argv[2], "w"))', os.path.join(ROOT, 'tests'),
                 '{folder}/results.json'],
    # 2-digit addition, 99.9% or 100% by step 1000, 100% at 1500 (seeds 1337 and 1 to 5)
    'added': [sys.executable, CALC, '--n_digits=2', '--ops=+', '--n_layer=2', '--n_embd=32', '--batch_size=64',
              '--max_iters=1500', '--max_time=0', '--eval_interval=500', '--device=cpu',
              '--ckpt_path={folder}/calc.pt'],
}
started = {}


@pytest.hookimpl(trylast=True) # after -m and -k have left out what they leave out
def pytest_collection_modifyitems(config, items):
    needed = {name for item in items for name in getattr(item, 'fixturenames', ())}
    items.sort(key=lambda item: bool(set(BESIDE) & set(getattr(item, 'fixturenames', ())))) # theirs last: ready then
    for name in needed & set(BESIDE) if not config.option.collectonly else ():
        folder = tempfile.mkdtemp(prefix=f'{name}-')
        started[name] = folder, subprocess.Popen(
            [arg.format(folder=folder) for arg in BESIDE[name]], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'},
            start_new_session=True) # a process group of its own (POSIX): the replay's workers end with it


def pytest_sessionfinish(session):
    for folder, proc in started.values():
        if proc.poll() is None: # pytest ended first (-x, Ctrl-C): the run and what it started
            os.killpg(proc.pid, signal.SIGKILL) if hasattr(os, 'killpg') else proc.kill()
        proc.communicate()
        shutil.rmtree(folder, ignore_errors=True)


def beside(name):
    """The run started for this fixture's tests: (its exit status, stdout, stderr, folder)."""
    folder, proc = started[name]
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err, folder


@pytest.fixture(scope='session')
def replayed():
    """python tests/replay.py's results and table: every stage of the lecture, trained as the video trains it."""
    status, out, err, folder = beside('replayed')
    assert status == 0, err
    return json.load(open(f'{folder}/results.json')), out


@pytest.fixture(scope='session')
def added():
    """exercises/calculator.py, a tiny model trained on 2-digit addition: (its stdout, its checkpoint)."""
    status, out, err, folder = beside('added')
    assert status == 0, err
    return out, f'{folder}/calc.pt'


class Clock:
    """A clock for gpt.py on which each optimizer step takes 0.1 s and nothing else any time: max_time's tests
    wait on it, not on the machine (a slow or busy one would change how far they get)."""
    def __init__(self):
        self.now = 1000.0
    def perf_counter(self): # (the only clock gpt.py reads)
        return self.now


@pytest.fixture
def clock(monkeypatch):
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    fake = Clock()
    monkeypatch.setattr(gpt, 'time', fake)
    handle = register_optimizer_step_pre_hook(lambda *_: setattr(fake, 'now', fake.now + 0.1))
    yield fake
    handle.remove()


@pytest.fixture
def tiny_text(tmp_path):
    """A copy of the small committed text in a temporary folder, with the checkpoint beside it."""
    path = tmp_path / 'tiny.txt'
    path.write_bytes(open(TINY, 'rb').read())
    return path
