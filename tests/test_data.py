"""The data chapters: char tokenizer, 90/10 split, batches of chunks."""
import hashlib

import pytest
import torch

import bigram
import gpt
from conftest import SHAKESPEARE, TINY


@pytest.mark.parametrize('script', [gpt, bigram])
def test_encode_decode_round_trip(script):
    text = open(TINY).read()
    chars = sorted(set(text))
    encode, decode = script.tokenizer(chars)
    assert encode('hii there') == [chars.index(c) for c in 'hii there']
    assert decode(encode(text)) == text
    assert sorted(encode(''.join(chars))) == list(range(len(chars)))


def test_the_committed_input_txt_is_char_rnns_tiny_shakespeare_with_the_lectures_vocabulary():
    raw = open(SHAKESPEARE, 'rb').read() # committed: a fresh clone trains offline
    assert len(raw) == 1115394
    assert hashlib.sha256(raw).hexdigest() == '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
    text = gpt.load_text(SHAKESPEARE, 'http://unused')
    chars = sorted(set(text))
    assert len(chars) == 65
    assert ''.join(chars) == "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize('script', [gpt, bigram])
def test_a_byte_order_mark_is_not_read_as_text(script, tmp_path):
    # Windows' Notepad may save UTF-8 beginning with one: it is no character of the text, nor of the vocabulary
    (tmp_path / 'notepad.txt').write_bytes(b'\xef\xbb\xbf' + open(TINY, 'rb').read())
    assert script.load_text(str(tmp_path / 'notepad.txt'), 'http://unused') == open(TINY, encoding='utf-8').read()
    (tmp_path / 'latin.txt').write_bytes(b'\xef\xbb\xbfhello w\xe9rld') # and a byte that is not UTF-8 is found where it is
    with pytest.raises(script.UsageError, match='not UTF-8 text \\(byte 0xe9 at offset 10\\)'):
        script.load_text(str(tmp_path / 'latin.txt'), 'http://unused')


@pytest.mark.parametrize('script', [gpt, bigram])
def test_split_is_first_90_percent_then_last_10(script):
    text = open(TINY).read()
    encode, decode = script.tokenizer(sorted(set(text)))
    train, val = script.split_data(text, encode)
    assert len(train) == int(0.9 * len(text)) and len(train) + len(val) == len(text)
    assert decode(train.tolist()) + decode(val.tolist()) == text


@pytest.mark.parametrize('script', [gpt, bigram])
def test_get_batch_targets_are_inputs_shifted_by_one_inside_the_split(script):
    torch.manual_seed(0)
    data = torch.arange(1000, 1100) # values tell where a window came from
    B, T = 4, 8
    for _ in range(200):
        x, y = script.get_batch(data, B, T, 'cpu')
        assert x.shape == (B, T) and y.shape == (B, T)
        assert torch.equal(y[:, :-1], x[:, 1:]) # y[t] is the character after x[t]
        assert torch.equal(y[:, -1], x[:, -1] + 1)
        assert x.min() >= 1000 and y.max() <= 1099 # every window lies inside its split


def test_every_start_position_can_be_drawn():
    torch.manual_seed(0)
    data = torch.arange(20)
    starts = set()
    for _ in range(300):
        x, _ = gpt.get_batch(data, 4, 8, 'cpu')
        starts.update(x[:, 0].tolist())
    assert starts == set(range(20 - 8)) # the last window ends exactly at the split's end
