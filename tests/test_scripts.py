"""The scripts end to end, as a learner runs them: real subprocesses, real files, a real HTTP server."""
import http.server
import io
import inspect
import math
import os
import re
import sys
import threading

import pytest

import bigram
import gpt
from conftest import TINY, TINY_GPT, run_script, train

STEP = re.compile(r'^step (\d+): train loss (\d+\.\d{4}), val loss (\d+\.\d{4})$', re.M)


def val_losses(stdout):
    return [float(m.group(3)) for m in STEP.finditer(stdout)]


def test_bigram_short_run_lowers_val_loss(tiny_text, capsys):
    bigram.main([f'--input_path={tiny_text}', '--max_iters=300', '--eval_interval=100', '--eval_iters=20',
                 '--max_new_tokens=50', '--device=cpu'])
    out = capsys.readouterr().out
    losses = val_losses(out)
    assert len(losses) == 4 # steps 0, 100, 200, 299
    vocab = len(set(open(TINY).read()))
    assert losses[0] > math.log(vocab) # N(0,1) init starts worse than uniform
    assert losses[-1] < losses[0] - 1.0
    sample = out.rstrip('\n').split('trained in')[-1].split('\n', 1)[1]
    assert len(sample) == 51 # the start token and 50 new characters
    assert set(sample) <= set(open(TINY).read())


def test_gpt_tiny_run_prints_the_lectures_lines(tiny_text):
    r = run_script('gpt.py', *TINY_GPT, f'--input_path={tiny_text}', f'--ckpt_path={tiny_text.parent}/gpt.pt',
                   '--max_iters=30', '--eval_interval=10')
    assert r.returncode == 0, r.stderr
    assert re.search(r'^0\.\d+ M parameters$', r.stdout, re.M)
    assert [int(m.group(1)) for m in STEP.finditer(r.stdout)] == [0, 10, 20, 29]
    assert 'config small on cpu' in r.stdout # says which configuration and device it runs
    assert (tiny_text.parent / 'gpt.pt').exists() and (tiny_text.parent / 'gpt.csv').exists()


@pytest.mark.parametrize('script, arg, words', [
    ('gpt.py', '--max_iter=10', ["unknown hyperparameter '--max_iter=10'", 'valid names: batch_size, block_size']),
    pytest.param('bigram.py', '--learning_rate=fast', ["bad value 'fast' for --learning_rate", 'expected float'],
                 marks=pytest.mark.slow), # (the same lines as gpt.py's: test_both_scripts_share_the_code...)
])
def test_bad_override_exits_2_with_one_line(script, arg, words, tiny_text):
    r = run_script(script, arg, f'--input_path={tiny_text}')
    assert r.returncode == 2
    assert r.stdout == ''
    line = r.stderr.strip()
    assert '\n' not in line and 'Traceback' not in line
    assert line.startswith(f'{script}: error: ')
    for w in words:
        assert w in line


@pytest.mark.parametrize('script, arg, words', [
    (bigram, '--max_iter=10', ["unknown hyperparameter '--max_iter=10'", 'valid names: batch_size, block_size']),
    (gpt, '--batch_size=ten', ["bad value 'ten' for --batch_size", 'expected int', 'valid names:']),
    (bigram, '--block_size=0', ['--block_size=0 must be positive']),
    (bigram, '--learning_rate=nan', ["bad value 'nan' for --learning_rate: expected float"]), # AdamW: a traceback
    (gpt, 'train', ["unknown hyperparameter 'train'"]),
    (gpt, 'sample', ["unknown hyperparameter 'sample'"]), # a name without its dashes is not taken as --sample
    (bigram, 'max_iters', ["unknown hyperparameter 'max_iters'"]),
])
def test_bad_override_is_refused(script, arg, words, tiny_text, capsys):
    # in this process, to save a start-up of torch each: the two cases above go through the real terminal
    with pytest.raises(script.UsageError) as e:
        script.main([arg, f'--input_path={tiny_text}'])
    assert e.value.status == 2
    for w in words:
        assert w in str(e.value)
    assert capsys.readouterr().out == ''


@pytest.mark.parametrize('args, words', [
    (['--n_embd=30', '--n_head=4'], '--n_embd=30 must be divisible by --n_head=4'),
    (['--n_layer=-1'], '--n_layer=-1 must be positive'),
    (['--resume=maybe'], "bad value 'maybe' for --resume: expected bool"),
    (['--lr_decay=cos'], "--lr_decay='cos' must be 'none', 'cosine' or 'linear'"),
    (['--learning_rate=1e-3', '--min_lr=1e-2'], '--min_lr=0.01 must be in [0, --learning_rate=0.001]'),
    (['--dtype=float8'], "--dtype='float8' must be 'auto', 'float32', 'bfloat16' or 'float16'"),
    (['--beta2=1'], '--beta2=1.0 must be in [0, 1)'), # AdamW's own error would be a traceback
    (['--weight_decay=-0.1'], '--weight_decay=-0.1 must be 0 or more'), # AdamW would take it, and grow the weights
    (['--max_time=-1'], '--max_time=-1.0 must be 0 or more'),
    (['--temperature=nan'], "bad value 'nan' for --temperature"), # (nan > 0 is False: no check below would see it)
    (['--max_time=inf'], "bad value 'inf' for --max_time"), # (0 means no limit)
])
def test_gpt_invalid_combinations_are_refused_before_training(args, words, tiny_text, capsys):
    # in this process, to save a start-up of torch each: how a refusal reaches the terminal (one line, exit
    # status 2, no traceback) is checked on real subprocesses above
    with pytest.raises(gpt.UsageError) as e:
        gpt.main([*TINY_GPT, '--max_iters=1', *args, f'--input_path={tiny_text}', f'--ckpt_path={tiny_text.parent}/gpt.pt'])
    assert e.value.status == 2 and words in str(e.value)
    assert capsys.readouterr().out == '' and not (tiny_text.parent / 'gpt.pt').exists()


@pytest.mark.parametrize('where, words', [
    ('none/gpt.pt', '/none/gpt.pt: no such folder; make it first'),
    ('', "' is a folder: name a file in it, e.g. --ckpt_path="), # (the save, minutes later, would fail on it)
    ('none/', "none/' is a folder: name a file in it, e.g. --ckpt_path="),
])
def test_a_checkpoint_into_a_missing_folder_or_onto_a_folder_is_refused_before_training(where, words, tiny_text,
                                                                                        capsys):
    # not when the first checkpoint is due, minutes later
    with pytest.raises(gpt.UsageError) as e:
        gpt.main([f'--input_path={tiny_text}', f'--ckpt_path={tiny_text.parent}/{where}', *TINY_GPT, '--max_iters=1'])
    assert words in str(e.value) and capsys.readouterr().out == '' and os.listdir(tiny_text.parent) == ['tiny.txt']


@pytest.mark.parametrize('script', [gpt, bigram])
def test_a_text_that_is_not_there_is_refused_not_downloaded_as_tiny_shakespeare(script, tmp_path, capsys):
    # a typo in --input_path: Tiny Shakespeare saved under that name would train on the wrong text without a word
    with pytest.raises(script.UsageError) as e:
        script.main([f'--input_path={tmp_path}/my.txt', '--device=cpu'])
    assert str(e.value) == f'no text at {tmp_path}/my.txt: check the path, or give --data_url= to download one there'
    assert e.value.status == 1 and capsys.readouterr().out == '' and os.listdir(tmp_path) == []


@pytest.mark.parametrize('script, content, words', [
    (gpt, b'', 'has 0 characters, too few'),
    (gpt, b'caf\xe9 au lait\n' * 100, 'is not UTF-8 text (byte 0xe9 at offset 3)'),
    (bigram, b'caf\xe9 au lait\n' * 100, 'is not UTF-8 text (byte 0xe9 at offset 3)'),
    (gpt, b'too short\n' * 5, 'has 50 characters, too few for --block_size=16'),
])
def test_bad_text_gives_a_clear_error(script, content, words, tmp_path, capsys):
    path = tmp_path / 'mine.txt'
    path.write_bytes(content)
    # in this process (the terminal's view is checked below); were the check broken, a short run, all in tmp_path
    tiny = [*TINY_GPT[:5], f'--ckpt_path={tmp_path}/gpt.pt'] if script is gpt else []
    with pytest.raises(script.UsageError) as e:
        script.main([f'--input_path={path}', '--block_size=16', '--max_iters=1', '--eval_iters=1', *tiny])
    assert e.value.status == 1 and words in str(e.value)
    assert path.read_bytes() == content # nothing touched
    assert os.listdir(tmp_path) == ['mine.txt'] # and nothing made


@pytest.mark.slow
def test_bad_text_exits_1_with_one_line(tmp_path):
    path = tmp_path / 'mine.txt'
    path.write_bytes(b'caf\xe9 au lait\n' * 100)
    r = run_script('gpt.py', f'--input_path={path}', f'--ckpt_path={tmp_path}/gpt.pt')
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.startswith(f'gpt.py: error: {path} is not UTF-8 text (byte 0xe9 at offset 3); ')
    assert r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    assert os.listdir(tmp_path) == ['mine.txt']


def test_any_utf8_text_trains(tmp_path, capsys):
    path = tmp_path / 'poem.txt'
    path.write_text('Ἐν ἀρχῇ ἦν ὁ λόγος — naïve café, 東京. ' * 40, encoding='utf-8')
    train(tmp_path, f'--input_path={path}', '--max_iters=5')
    assert set(capsys.readouterr().out.rstrip('\n').rsplit('\n', 1)[-1]) <= set(path.read_text(encoding='utf-8'))


@pytest.mark.slow
def test_a_console_that_cannot_show_the_text_gets_question_marks_not_a_traceback(tmp_path):
    # Windows writes redirected output in its code page (cp1252 in the West): Greek has no place in it
    path = tmp_path / 'greek.txt'
    path.write_text('Μῆνιν ἄειδε θεὰ Πηληϊάδεω Ἀχιλῆος, café\n' * 40, encoding='utf-8')
    for args in (['--max_iters=3', '--eval_sample=10'], ['--sample', '--prompt=Μῆνιν']):
        r = run_script('gpt.py', *TINY_GPT, f'--input_path={path}', f'--ckpt_path={tmp_path}/gpt.pt', *args,
                       encoding='cp1252', env={'PYTHONIOENCODING': 'cp1252'})
        assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
        if '--sample' in args:
            assert r.stdout.startswith('?????') # the prompt, Μῆνιν
        else:
            assert r.stdout.count('  writes: ') == 2 # (a line whose characters the model chose)
    # an error names what it refuses as Python escapes it, not as '?': the user can tell which character it was
    r = run_script('gpt.py', '--sample', '--prompt=Ων', f'--ckpt_path={tmp_path}/gpt.pt', '--device=cpu',
                   encoding='cp1252', env={'PYTHONIOENCODING': 'cp1252'})
    assert r.returncode == 2 and "never saw: '\\u03a9'" in r.stderr and 'Traceback' not in r.stderr, r.stderr


class Server:
    """A real HTTP server on loopback that serves one file, as the char-rnn URL does; with cut, the connection
    breaks after that many bytes of it."""

    def __init__(self, body, cut=None):
        body_ = body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != '/input.txt':
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body_)))
                self.end_headers()
                self.wfile.write(body_[:cut])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/input.txt'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize('script', [bigram, gpt], ids=['bigram.py', 'gpt.py'])
def test_download_writes_the_served_bytes(script, tmp_path, capsys):
    body = open(TINY, 'rb').read()
    server = Server(body)
    try:
        target = tmp_path / 'input.txt'
        script.main([f'--data_url={server.url}', f'--input_path={target}', '--max_iters=1', '--eval_iters=1',
                     '--max_new_tokens=1', f'--ckpt_path={tmp_path}/gpt.pt' if script is gpt else '--block_size=8',
                     *(TINY_GPT[:5] if script is gpt else []), '--device=cpu'])
    finally:
        server.close()
    assert f'downloading {server.url} to {target}' in capsys.readouterr().out
    assert target.read_bytes() == body
    made = sorted(set(os.listdir(tmp_path)) - {'gpt.png'}) # the plot, where matplotlib is installed
    assert made == (['gpt.csv', 'gpt.pt', 'input.txt'] if script is gpt else ['input.txt'])


@pytest.mark.parametrize('script, where', [(gpt, 'closed port'), (bigram, 'missing file'), (gpt, 'broken off'),
                                           (bigram, 'broken off')], ids=lambda x: getattr(x, '__name__', x))
def test_failed_download_exits_1_and_leaves_no_file(script, where, tmp_path, capsys):
    # in this process: how status 1 reaches the terminal, one line, test_bad_text_exits_1_with_one_line shows
    body = open(TINY, 'rb').read() * 40 # 320 kB: several chunks reach the disk before the connection breaks
    server = Server(body, cut=len(body) // 2 if where == 'broken off' else None)
    url = server.url if where != 'closed port' else server.url.rsplit(':', 1)[0] + ':9/input.txt'
    if where == 'missing file':
        url = url.replace('input.txt', 'nothing.txt') # the server answers 404
    try:
        target = tmp_path / 'input.txt'
        tiny = [*TINY_GPT[:5], f'--ckpt_path={tmp_path}/gpt.pt'] if script is gpt else []
        with pytest.raises(script.UsageError) as e:
            script.main([f'--data_url={url}', f'--input_path={target}', '--max_iters=1', '--eval_iters=1', *tiny])
    finally:
        server.close()
    assert e.value.status == 1
    assert f'could not download {url}' in str(e.value) and f'save it as {target}' in str(e.value)
    assert os.listdir(tmp_path) == [] # no partial file, and nothing else


@pytest.mark.slow
def test_help_exits_0_with_the_usage(capsys):
    r = run_script('gpt.py', '--help')
    assert r.returncode == 0 and r.stderr == ''
    assert r.stdout.startswith('gpt.py: the decoder-only transformer') and '  --max_iters=5000 ' in r.stdout
    bigram.main(['-h']) # the other script, in this process
    out = capsys.readouterr().out
    assert 'python bigram.py --max_iters=1000 --learning_rate=3e-2' in out
    for name, default in bigram.HYPERPARAMETERS.items():
        assert re.search(rf'^  --{name}={re.escape(str(default))}( |$)', out, re.M), name
    assert re.search(r'^  --block_size=8 +what is the maximum context length for predictions\?$', out, re.M)



def test_a_bigram_run_that_diverges_stops_at_the_evaluation_that_finds_it_in_one_line(tiny_text, capsys):
    # a learner trying rates (1000 already overflows the table): the sample at the end would be a traceback
    with pytest.raises(bigram.UsageError) as e:
        bigram.main([f'--input_path={tiny_text}', '--learning_rate=1e30', '--max_iters=20', '--eval_interval=5',
                     '--eval_iters=2', '--device=cpu'])
    assert e.value.status == 1
    assert str(e.value) == 'step 5: the loss is nan, training diverged: lower --learning_rate (here 1e+30)'
    assert capsys.readouterr().out.splitlines()[-1] == 'step 5: train loss nan, val loss nan'


def test_bigram_prints_a_progress_line_in_a_log(tiny_text, monkeypatch, capsys):
    monkeypatch.setattr(bigram, 'PROGRESS_EVERY', 0) # a line at every step instead of every 30 s
    bigram.main([f'--input_path={tiny_text}', '--max_iters=3', '--eval_interval=100', '--eval_iters=1',
                 '--max_new_tokens=0', '--device=cpu'])
    out = capsys.readouterr()
    assert re.findall(r'^step (\d)/3 \| \d+ it/s \| 0m\d\ds left$', out.err, re.M) == ['1', '2', '3'], out.err
    assert 'step 1/3' not in out.out # on stderr: the lecture's lines alone on stdout


@pytest.mark.parametrize('script', [gpt, bigram], ids=['gpt.py', 'bigram.py'])
def test_a_stream_that_cannot_be_reconfigured_still_gets_the_output(script, monkeypatch):
    # IDLE's stdout, a notebook's %run, redirect_stdout(StringIO()): no reconfigure(errors=...)
    out = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', out)
    monkeypatch.setattr(sys, 'argv', [script.__name__ + '.py', '--help'])
    script.run_command(script.main)
    assert out.getvalue().startswith(f'{script.__name__}.py: ')


@pytest.mark.parametrize('name', ['UsageError', 'parse_args', 'check_device', 'load_text', 'run_command'])
def test_both_scripts_share_the_code_of_their_command_line_and_download(name):
    # each script stands alone, so this code is in both: one behaviour, the same lines, kept so here
    assert inspect.getsource(getattr(gpt, name)) == inspect.getsource(getattr(bigram, name))
