"""Exercise 3's finetuning: --init_from starts a new run from another checkpoint's weights, mapped by character."""
import math
import re

import pytest
import torch

import gpt
from conftest import TINY, run_script, train

ROWS = ('token_embedding_table.weight', 'lm_head.weight', 'lm_head.bias')


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    """A tiny model trained on the first 6,000 characters of the tiny text, and a second text from the same source
    whose vocabulary is sorted otherwise: digits it never saw come before the letters (it lacks a few letters too)."""
    folder = tmp_path_factory.mktemp('pretrained')
    text = open(TINY, encoding='utf-8').read()
    (folder / 'big.txt').write_text(text[:6000], encoding='utf-8')
    (folder / 'small.txt').write_text(''.join(f'{i % 10}{line}\n' for i, line in
                                              enumerate(text[6000:].splitlines())), encoding='utf-8')
    train(folder, f'--input_path={folder}/big.txt', '--max_iters=300', '--eval_interval=1000', '--learning_rate=1e-2',
          '--max_new_tokens=0', ckpt='big.pt')
    return folder


def finetuning(folder):
    return [f'--init_from={folder}/big.pt', f'--input_path={folder}/small.txt', '--eval_iters=20', '--max_new_tokens=0']


def test_the_rows_of_each_character_are_found_by_the_character_not_its_index(pretrained, capsys):
    before = (pretrained / 'big.pt').read_bytes()
    # one step at a rate too small to move anything: the saved weights are those --init_from started with
    train(pretrained, *finetuning(pretrained), '--max_iters=1', '--learning_rate=1e-12', ckpt='small.pt')
    big, small = torch.load(pretrained / 'big.pt'), torch.load(pretrained / 'small.pt')
    assert (pretrained / 'big.pt').read_bytes() == before # the file it starts from is never written to
    old, new = big['chars'], small['chars']
    shared = [ch for ch in new if ch in old]
    assert any(new.index(ch) != old.index(ch) for ch in shared) # the test means something: indices moved
    for name in ROWS:
        for ch in shared:
            assert torch.allclose(small['model'][name][new.index(ch)], big['model'][name][old.index(ch)], atol=1e-9)
    for ch in '0123456789': # never seen: a fresh model's rows (the bias 0), not the checkpoint's at that index
        i = new.index(ch)
        assert abs(small['model']['lm_head.bias'][i]) < 1e-9
        assert not torch.allclose(small['model']['token_embedding_table.weight'][i],
                                  big['model']['token_embedding_table.weight'][i])
    # everything else came over as it was, and the run is a new one: step 0, a fresh optimizer, this run's recipe
    for name, tensor in big['model'].items():
        if name not in ROWS:
            assert torch.allclose(small['model'][name], tensor, atol=1e-9), name
    assert small['iter'] == 1 and small['optimizer']['state'][0]['step'] == 1
    assert small['config']['learning_rate'] == 1e-12
    out = capsys.readouterr().out
    assert f"weights from {pretrained}/big.pt: {len(shared)} of this text's {len(new)} characters known; " \
           f"new: {''.join(sorted(set(new) - set(old)))!r}; dropped: {''.join(sorted(set(old) - set(new)))!r}" in out


def test_the_pretrained_weights_start_far_below_a_fresh_models_loss(pretrained, capsys):
    train(pretrained, *finetuning(pretrained), '--max_iters=1', ckpt='small.pt')
    out = capsys.readouterr().out
    vocab = len(torch.load(pretrained / 'small.pt')['chars'])
    step0 = float(re.search(r'^step 0: train loss [\d.]+, val loss ([\d.]+)$', out, re.M).group(1))
    assert step0 < math.log(vocab) - 1.0 # a fresh model starts at ln(vocab_size): --init_from loaded what it learned
    assert 'kept whole' not in out # the shape is the checkpoint's: nothing of small's to keep it from
    # the lecture's advice: finetune at a lower rate (half the small configuration's, unless one is given)
    assert torch.load(pretrained / 'small.pt')['config']['learning_rate'] == gpt.small['learning_rate'] / 2


@pytest.mark.parametrize('args, words', [
    (['--resume'], '--init_from starts a new run from a checkpoint\'s weights, --resume carries one on'),
    (['--n_embd=64'], 'has n_embd=32, not --n_embd=64; drop --n_embd, or pass another --init_from='),
    (['--ckpt_path={folder}/big.pt'], 'is also --ckpt_path: this run would write over the checkpoint it starts from'),
    (['--init_from={folder}/none.pt'], 'no checkpoint at'),
    (['--init_from={folder}/small.txt'], 'is not a readable gpt.py checkpoint'),
])
def test_bad_init_from_is_refused_and_the_checkpoint_stays(args, words, pretrained, capsys):
    before = (pretrained / 'big.pt').read_bytes()
    with pytest.raises(gpt.UsageError) as e:
        gpt.main([f'--init_from={pretrained}/big.pt', f'--input_path={pretrained}/small.txt', '--device=cpu',
                  f'--ckpt_path={pretrained}/other.pt', *[a.format(folder=pretrained) for a in args]])
    assert words in str(e.value) and capsys.readouterr().out == ''
    assert (pretrained / 'big.pt').read_bytes() == before and not (pretrained / 'other.pt').exists()


@pytest.mark.slow
def test_a_bad_init_from_is_one_line_on_the_terminal(pretrained):
    r = run_script('gpt.py', *finetuning(pretrained), f'--init_from={pretrained}/none.pt')
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.count('\n') == 1 and r.stderr.startswith('gpt.py: error: no checkpoint at')
