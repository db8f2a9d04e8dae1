import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, 'tests', 'tiny.txt') # the first 8,000 characters of Tiny Shakespeare
SHAKESPEARE = os.path.join(ROOT, 'input.txt')
sys.path.insert(0, ROOT)

# a model small enough to train in seconds on a laptop CPU
TINY_GPT = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=8',
            '--eval_iters=2', '--max_new_tokens=20', '--eval_sample=0', '--device=cpu']


def run_script(script, *args, cwd=None, timeout=120, env=None):
    """Run bigram.py or gpt.py as a user would, in a real subprocess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})


@pytest.fixture
def tiny_text(tmp_path):
    """A copy of the small committed text in a temporary folder, with the checkpoint beside it."""
    path = tmp_path / 'tiny.txt'
    path.write_bytes(open(TINY, 'rb').read())
    return path
