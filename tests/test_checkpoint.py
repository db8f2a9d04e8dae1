"""Train once, sample forever: checkpoints, --sample, --resume and Ctrl-C, on a real tiny run."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import gpt
from conftest import ROOT, SHAKESPEARE, TINY, TINY_GPT, run_script, train


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny model trained for 20 steps; tests work on copies of its checkpoint."""
    folder = tmp_path_factory.mktemp('trained')
    shutil.copy(TINY, folder / 'tiny.txt')
    train(folder, f'--input_path={folder}/tiny.txt', '--max_iters=20', '--eval_interval=10')
    return folder


@pytest.fixture
def ckpt(trained, tmp_path):
    shutil.copy(trained / 'gpt.pt', tmp_path / 'gpt.pt')
    shutil.copy(trained / 'gpt.csv', tmp_path / 'gpt.csv')
    shutil.copy(trained / 'tiny.txt', tmp_path / 'tiny.txt')
    return tmp_path / 'gpt.pt'


def model_from(ckpt):
    c = ckpt['config']
    model = gpt.GPTLanguageModel(len(ckpt['chars']), c['block_size'], c['n_embd'], c['n_head'], c['n_layer'])
    model.load_state_dict(ckpt['model'])
    return model.eval()


def test_checkpoint_holds_what_training_needs(ckpt):
    saved = gpt.load_checkpoint(str(ckpt))
    assert saved['iter'] == 20
    assert saved['chars'] == sorted(set(open(TINY).read()))
    assert saved['config']['n_layer'] == 2 and saved['config']['n_embd'] == 32
    assert saved['optimizer']['state'][0]['step'] == 20 # AdamW's moments, after 20 steps
    history = (ckpt.parent / 'gpt.csv').read_text().splitlines()
    assert history[0] == 'step,train_loss,val_loss,elapsed_s'
    assert [row.split(',')[0] for row in history[1:]] == ['0', '10', '19']
    assert saved['best_val_loss'] == pytest.approx(min(float(row.split(',')[2]) for row in history[1:]), abs=1e-4)


def test_saved_model_reproduces_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(20, 16, 32, 2, 2).eval()
    opt = gpt.configure_optimizer(model, 1e-3, 0.1, 0.99)
    chars = [chr(97 + i) for i in range(20)]
    cfg = dict(gpt.HYPERPARAMETERS, block_size=16, n_embd=32, n_head=2, n_layer=2)
    gpt.save_atomically(str(tmp_path / 'm.pt'), {'model': model.state_dict(), 'optimizer': opt.state_dict(),
                                                 'config': cfg, 'chars': chars, 'iter': 7, 'best_val_loss': 1.5})
    assert os.listdir(tmp_path) == ['m.pt'] # no temporary file left
    idx = torch.randint(20, (3, 16))
    assert torch.equal(model_from(gpt.load_checkpoint(str(tmp_path / 'm.pt')))(idx)[0], model(idx)[0])


def test_sample_prints_prompt_plus_max_new_tokens_without_input_txt(ckpt, tmp_path, capsys):
    os.remove(tmp_path / 'tiny.txt')
    args = ['--sample', f'--ckpt_path={ckpt}', f'--input_path={tmp_path}/absent.txt', '--prompt=ROMEO:',
            '--max_new_tokens=40', '--device=cpu']
    first = run_script('gpt.py', *args, '--seed=7', cwd=tmp_path)
    # the same command again and with another seed, in this process (a start-up of torch fewer each)
    gpt.main([*args, '--seed=7'])
    again = capsys.readouterr().out
    gpt.main([*args, '--seed=8'])
    other = capsys.readouterr().out
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith('\n') and first.stdout.startswith('ROMEO:')
    assert len(first.stdout) == len('ROMEO:') + 40 + 1 # the prompt, 40 characters, one newline: nothing else
    assert set(first.stdout[:-1]) <= set(open(TINY).read())
    assert first.stdout == again and first.stdout != other
    assert not (tmp_path / 'absent.txt').exists()


def test_greedy_sample_matches_the_checkpoints_model(ckpt, capsys):
    gpt.main(['--sample', f'--ckpt_path={ckpt}', '--prompt=First', '--max_new_tokens=30', '--top_k=1', '--device=cpu'])
    saved = gpt.load_checkpoint(str(ckpt))
    encode, decode = gpt.tokenizer(saved['chars'])
    out = model_from(saved).generate(torch.tensor([encode('First')]), 30, top_k=1)
    assert capsys.readouterr().out == decode(out[0].tolist()) + '\n'


def test_resume_carries_on_to_max_iters(ckpt, trained, capsys):
    gpt.main(['--resume', f'--ckpt_path={ckpt}', '--max_iters=30', '--device=cpu']) # on its text, not input.txt
    out = capsys.readouterr().out
    assert 'from step 20' in out
    # the shape and recipe came from the checkpoint: step 20's evaluation was done before it was saved
    assert re.findall(r'^step (\d+):', out, re.M) == ['29']
    before = gpt.load_checkpoint(str(trained / 'gpt.pt'))['config']
    saved = gpt.load_checkpoint(str(ckpt))
    assert saved['iter'] == 30
    for name in gpt.RECIPE: # every value of the shape, the recipe and the text carried on; only max_iters given
        assert saved['config'][name] == (30 if name == 'max_iters' else before[name]), name
    assert before['learning_rate'] == gpt.small['learning_rate'] and before['n_embd'] == 32 # not the defaults
    assert saved['optimizer']['state'][0]['step'] == 30 # the same AdamW, ten steps further
    assert (ckpt.parent / 'gpt.csv').read_text().splitlines()[-1].startswith('29,')


def test_a_run_whose_text_is_not_here_resumes_on_this_gpt_pys_own(tmp_path, capsys):
    # trained in a folder since moved, or on another machine (Colab, say): the text it names is not here
    (tmp_path / 'colab').mkdir()
    shutil.copy(SHAKESPEARE, tmp_path / 'colab' / 'input.txt')
    train(tmp_path, f'--input_path={tmp_path}/colab/input.txt', '--max_iters=2', '--eval_interval=100',
          '--max_new_tokens=0')
    shutil.rmtree(tmp_path / 'colab')
    gpt.main(['--resume', f'--ckpt_path={tmp_path}/gpt.pt', '--max_iters=3', '--max_new_tokens=0', '--device=cpu'])
    assert 'from step 2 of' in capsys.readouterr().out # on input.txt beside gpt.py: restore found its vocabulary
    assert gpt.load_checkpoint(str(tmp_path / 'gpt.pt'))['config']['input_path'] == gpt.HYPERPARAMETERS['input_path']


def test_resume_without_its_history_starts_a_new_one(ckpt, capsys):
    os.remove(ckpt.parent / 'gpt.csv')
    gpt.main(['--resume', f'--ckpt_path={ckpt}', f'--input_path={ckpt.parent}/tiny.txt', '--max_iters=22',
              '--max_new_tokens=0', '--device=cpu'])
    history = (ckpt.parent / 'gpt.csv').read_text().splitlines()
    assert history[0] == 'step,train_loss,val_loss,elapsed_s' and history[1].startswith('21,') and len(history) == 2


def test_each_resume_draws_batches_of_its_own(tmp_path, monkeypatch):
    # a run resumed at step N seeds its batches with the step: were it reseeded as the run began, every resume would
    # replay the same batches, and a run carried on in short pieces would train on a few batches over and over
    train_length = int(0.9 * len(open(TINY).read()))
    drawn, evaluating = [], []
    get_batch, estimate_loss = gpt.get_batch, gpt.estimate_loss

    def recording_get_batch(data, *args):
        x, y = get_batch(data, *args)
        if len(data) == train_length and not evaluating: # a training batch, not one of estimate_loss's
            drawn[-1].append(x)
        return x, y

    def flagged_estimate_loss(*args):
        evaluating.append(True)
        try:
            return estimate_loss(*args)
        finally:
            evaluating.pop()

    monkeypatch.setattr(gpt, 'get_batch', recording_get_batch)
    monkeypatch.setattr(gpt, 'estimate_loss', flagged_estimate_loss)
    args = [f'--input_path={TINY}', f'--ckpt_path={tmp_path}/gpt.pt', '--max_new_tokens=0', '--device=cpu']
    for max_iters, resume in ((3, []), (6, ['--resume']), (9, ['--resume'])): # steps 0-2, then 3-5, then 6-8
        drawn.append([])
        gpt.main([*TINY_GPT, *args, *resume, f'--max_iters={max_iters}', '--eval_interval=1000'])
    assert [len(batches) for batches in drawn] == [3, 3, 3]
    steps = [(3 * piece + i, x) for piece, batches in enumerate(drawn) for i, x in enumerate(batches)]
    replayed = [(later, earlier) for later, x in steps for earlier, e in steps if earlier < later and torch.equal(x, e)]
    assert not replayed, f"resumed runs drew again the batches of earlier steps (step, the earlier step): {replayed}"


def interrupted(tmp_path, *args, started='step 0:', signals=1, script='gpt.py'):
    """The script trained, and interrupted by Ctrl-C once it prints a line starting with started; (exit status,
    stderr)."""
    shutil.copy(TINY, tmp_path / 'tiny.txt')
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *TINY_GPT, '--max_iters=1000000',
                             f'--input_path={tmp_path}/tiny.txt', f'--ckpt_path={tmp_path}/gpt.pt', *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'})
    try:
        for line in proc.stdout: # wait until training is under way
            if line.startswith(started):
                break
        for i in range(signals):
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            if i < signals - 1:
                time.sleep(0.3)
                assert proc.poll() is None # a first Ctrl-C does not stop an evaluation under way
        out, err = proc.communicate(timeout=60)
        return proc.returncode, err
    finally: # whatever happened, no child is left training
        proc.kill()
        proc.wait()


WINDOWS_CTRL_C = pytest.mark.skipif(os.name == 'nt', reason="Windows sends Ctrl-C to a console, not to one process "
                                    "(Popen.send_signal: SIGTERM, CTRL_C_EVENT or CTRL_BREAK_EVENT only)")


@pytest.mark.slow
@WINDOWS_CTRL_C
@pytest.mark.parametrize('script', ['gpt.py', 'exercises/muon.py'])
def test_ctrl_c_saves_a_checkpoint_exits_130_and_its_command_resumes(script, tmp_path):
    status, err = interrupted(tmp_path, script=script)
    assert status == 130
    assert 'Traceback' not in err
    path = re.escape(f'{tmp_path}/gpt.pt')
    command = re.search(rf"interrupted at step (\d+): saved {path}; continue with '(python \S*{re.escape(script)} "
                        rf"--resume --ckpt_path={path})'", err)
    saved = gpt.load_checkpoint(str(tmp_path / 'gpt.pt'))
    assert 0 < saved['iter'] == int(command.group(1)) < 1000000
    assert script != 'gpt.py' or saved['optimizer']['state'][0]['step'] == saved['iter'] # the step's update in it
    assert [p.name for p in tmp_path.iterdir() if 'tmp' in p.name] == []
    if script == 'gpt.py': # (its --resume: test_resume_carries_on_to_max_iters)
        return
    # the command it prints carries on (muon.py's own checkpoint: gpt.py refuses it) on its text, for 2 steps more
    r = run_script(*command.group(2).split()[1:], f"--max_iters={saved['iter'] + 2}", '--max_new_tokens=0')
    assert r.returncode == 0 and f"from step {saved['iter']} of" in r.stdout, r.stderr
    assert gpt.load_checkpoint(str(tmp_path / 'gpt.pt'))['iter'] == saved['iter'] + 2


@pytest.mark.slow
@WINDOWS_CTRL_C
def test_a_second_ctrl_c_stops_at_once(tmp_path):
    # the first asks for a stop after the step under way; here the run is in an evaluation that would take minutes
    # (the config line comes just before it), so a second one must stop it there, saving nothing
    status, err = interrupted(tmp_path, '--eval_iters=10000000', started='config ', signals=2)
    assert status == 130
    assert err.strip().splitlines()[-1] == 'gpt.py: interrupted' and 'Traceback' not in err
    assert not (tmp_path / 'gpt.pt').exists()


def test_resume_on_a_text_with_another_vocabulary_is_refused(ckpt, tmp_path):
    before = ckpt.read_bytes()
    (tmp_path / 'other.txt').write_text('0123456789 abc\n' * 200)
    with pytest.raises(gpt.UsageError, match='has another vocabulary than the checkpoint') as e:
        gpt.main(['--resume', f'--ckpt_path={ckpt}', f'--input_path={tmp_path}/other.txt', '--max_iters=40',
                  '--device=cpu'])
    assert e.value.status == 1 and ckpt.read_bytes() == before


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_checkpoint_there_stays_whole(ckpt):
    # a real failed write, not a mock: the operating system refuses the file past a size limit (EFBIG), as a full
    # disk does (ENOSPC) at whatever size is left; the history, a few lines, fits
    resource = pytest.importorskip('resource') # (not on Windows)
    before = ckpt.read_bytes()
    limit = len(before) // 2
    r = run_script('gpt.py', '--resume', f'--ckpt_path={ckpt}', f'--input_path={ckpt.parent}/tiny.txt',
                   '--max_iters=30', '--device=cpu',
                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert r.returncode == 1, r.stderr
    assert r.stderr == (f"gpt.py: error: cannot write {ckpt} (File too large); the one there is as it was; free some "
                        "space, or pass another --ckpt_path=\n")
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ['gpt.csv', 'gpt.pt', 'tiny.txt'] # no partial file


@pytest.mark.skipif(os.name == 'nt', reason="Windows replaces no file a program has open: the save says so instead")
def test_a_save_never_writes_into_the_checkpoint_a_reader_has_open(ckpt):
    before = ckpt.read_bytes()
    with open(ckpt, 'rb') as reader: # python gpt.py --sample reading it while the training saves, say
        gpt.main(['--resume', f'--ckpt_path={ckpt}', f'--input_path={ckpt.parent}/tiny.txt', '--max_iters=22',
                  '--max_new_tokens=0', '--device=cpu'])
        assert reader.read() == before # the old one, whole: the new one took its name as a file of its own
    assert gpt.load_checkpoint(str(ckpt))['iter'] == 22


def test_truncated_checkpoint_gives_a_clear_error_and_stays(ckpt, capsys):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    # --sample refuses it (status 1: one line on the terminal, as test_scripts.py's subprocesses show), and --resume
    # before it could train and overwrite it
    for args in (['--sample'], ['--resume', f'--input_path={ckpt.parent}/tiny.txt']):
        with pytest.raises(gpt.UsageError, match='is not a readable gpt.py checkpoint') as e:
            gpt.main([*args, f'--ckpt_path={ckpt}', '--device=cpu'])
        assert e.value.status == 1 and capsys.readouterr().out == ''
    assert ckpt.read_bytes() == data[:len(data) // 2] # nothing overwritten


def test_missing_or_foreign_checkpoint(tmp_path):
    with pytest.raises(gpt.UsageError, match=re.escape(f'no checkpoint at {tmp_path}/none.pt')) as e:
        gpt.main(['--sample', f'--ckpt_path={tmp_path}/none.pt'])
    assert e.value.status == 1
    (tmp_path / 'notes.pt').write_text('not a checkpoint')
    with pytest.raises(gpt.UsageError, match='notes.pt is not a readable gpt.py checkpoint') as e:
        gpt.main(['--sample', f'--ckpt_path={tmp_path}/notes.pt'])
    assert e.value.status == 1


def test_prompt_the_model_never_saw_gives_a_clear_error(ckpt, capsys):
    before = ckpt.read_bytes()
    with pytest.raises(gpt.UsageError, match="--prompt has characters the model never saw: '#€'") as e:
        gpt.main(['--sample', f'--ckpt_path={ckpt}', '--prompt=ROMEO€#'])
    assert e.value.status == 2 and capsys.readouterr().out == '' and ckpt.read_bytes() == before


@pytest.mark.parametrize('arg, words', [
    ('--n_layer=3', 'has n_layer=2, not --n_layer=3'),
    ('--temperature=0', '--temperature=0.0 must be positive'),
    ('--top_k=-1', '--top_k=-1 must be 0 or more'),
    ('--max_new_tokens=-5', '--max_new_tokens=-5 must be 0 or more'),
])
def test_bad_sampling_input_is_refused(ckpt, arg, words, capsys):
    # in this process, to save a start-up of torch each; the test above runs the real command
    before = ckpt.read_bytes()
    with pytest.raises(gpt.UsageError) as e:
        gpt.main(['--sample', f'--ckpt_path={ckpt}', arg])
    assert e.value.status == 2 and words in str(e.value)
    assert capsys.readouterr().out == '' and ckpt.read_bytes() == before


@pytest.mark.slow
@pytest.mark.skipif(os.name == 'nt', reason="Windows reports a closed pipe as OSError EINVAL, with no SIGPIPE status")
def test_sample_piped_into_a_reader_that_stops_early(ckpt):
    # python gpt.py --sample | head -1: the reader closes the pipe; no traceback. Without PYTHONUNBUFFERED, as a
    # terminal runs it
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'gpt.py'), '--sample', f'--ckpt_path={ckpt}',
                             '--max_new_tokens=50', '--device=cpu'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 141 and 'Traceback' not in err and 'Error' not in err


def test_the_sample_at_the_end_of_training_is_drawn_as_sample_draws_it(tmp_path, capsys):
    # the same weights, seed, prompt and sampling, in eval mode: the same text both ways; were the end of training to
    # sample with dropout on (0.5 here), or ignore --prompt, --temperature or --top_k, they would differ
    args = ['--prompt=ROMEO:', '--top_k=5', '--temperature=0.8', '--max_new_tokens=40', '--device=cpu',
            f'--ckpt_path={tmp_path}/gpt.pt']
    train(tmp_path, *args, '--max_iters=300', '--learning_rate=1e-2', '--dropout=0.5')
    trained = capsys.readouterr().out.split(' characters): ')[1].split('\n', 1)[1]
    gpt.main(['--sample', *args])
    sampled = capsys.readouterr().out
    assert sampled.startswith('ROMEO:') and len(sampled) == len('ROMEO:') + 40 + 1
    assert len(set(sampled[6:])) > 3 # words, not a character repeated: a sample that dropout would change
    assert trained == sampled


def test_bench_times_steps_after_a_finished_checkpoint_and_leaves_it_as_it_was(ckpt, capsys):
    # a finished run's budget is no limit to a benchmark, which saves nothing
    before = ckpt.read_bytes()
    gpt.main(['--bench', '--resume', f'--ckpt_path={ckpt}', f'--input_path={ckpt.parent}/tiny.txt', '--bench_iters=2',
              '--device=cpu'])
    assert re.search(r'^bench: [\d.]+ ms/iter', capsys.readouterr().out, re.M) and ckpt.read_bytes() == before


@pytest.mark.parametrize('command', [['--sample', '--ckpt_path={edited}'],
                                     ['--resume', '--ckpt_path={edited}', '--max_iters=30'],
                                     ['--init_from={edited}', '--ckpt_path={new}']])
def test_the_weights_of_another_model_are_refused_in_one_line(command, ckpt, tmp_path, capsys):
    # a checkpoint of a learner's edited gpt.py (here: the lecture's list of Heads), or one from before an edit
    saved = torch.load(ckpt)
    saved['model'] = {name.replace('sa.qkv.', 'sa.heads.0.key.'): w for name, w in saved['model'].items()}
    torch.save(saved, tmp_path / 'edited.pt')
    with pytest.raises(gpt.UsageError) as e:
        gpt.main([arg.format(edited=tmp_path / 'edited.pt', new=tmp_path / 'new.pt') for arg in command] +
                 ['--device=cpu'])
    assert str(e.value) == (f"{tmp_path}/edited.pt is not a readable gpt.py checkpoint (RuntimeError): it may be "
                            "truncated, or an edited gpt.py's; retrain with 'python gpt.py' or pass --"
                            f"{'init_from' if 'init' in command[0] else 'ckpt_path'}=")
    assert e.value.status == 1 and capsys.readouterr().out == ''
