"""What each head of a trained checkpoint reads, measured: the README's figures under its attention picture.

    python tests/head_stats.py gpt.pt

Over 200 windows of block_size characters of the val split (seeded), for every position from the 8th: the mean
weight each head puts on the character itself, the one before, the one before that, the current word's first
letter, and on spaces and newlines (beside the share of those among what a position can read), and the entropy of
its weights (a head that spreads them evenly over n positions has log(n))."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import gpt # noqa: E402


def head_stats(path, windows=200):
    ckpt = gpt.load_checkpoint(path)
    c = ckpt['config']
    model = gpt.GPTLanguageModel(len(ckpt['chars']), c['block_size'], c['n_embd'], c['n_head'], c['n_layer'])
    model.load_state_dict(ckpt['model'])
    encode, decode = gpt.tokenizer(ckpt['chars'])
    # the text it was trained on; trained elsewhere (Colab, a moved folder), this project's, as gpt.py --resume does
    path = c['input_path'] if os.path.exists(c['input_path']) else gpt.HYPERPARAMETERS['input_path']
    _, val = gpt.split_data(gpt.load_text(path, c['data_url']), encode)
    T = c['block_size']
    starts = torch.randint(len(val) - T, (windows,), generator=torch.Generator().manual_seed(0))
    sums, share, n = 0, 0.0, 0
    for s in starts.tolist():
        wei = gpt.attention_weights(model.eval(), val[s:s + T][None]) # (n_layer, n_head, T, T)
        text = decode(val[s:s + T].tolist())
        for i in range(8, T):
            start = max(text.rfind(' ', 0, i + 1), text.rfind('\n', 0, i + 1)) + 1 # of the current word
            spaces = [j for j in range(i + 1) if text[j] in ' \n']
            w = wei[:, :, i, :i + 1]
            first = w[..., start] if start <= i else torch.zeros_like(w[..., i]) # (none where i is a space)
            sums = sums + torch.stack([w[..., i], w[..., i - 1], w[..., i - 2], first,
                                       w[..., spaces].sum(-1), -(w * w.clamp_min(1e-12).log()).sum(-1)], -1)
            share, n = share + len(spaces) / (i + 1), n + 1
    return sums / n, share / n


def main(argv):
    stats, share = head_stats(argv[0] if argv else os.path.join(ROOT, 'gpt.pt'))
    print(f"spaces and newlines: {share:.2f} of what a position can read")
    print('block head | itself previous two back | word start | spaces | entropy (nats)')
    for (layer, head), row in zip([(l, h) for l in range(stats.size(0)) for h in range(stats.size(1))],
                                  stats.flatten(0, 1).tolist()):
        print(f"  {layer}     {head}  |  {row[0]:.2f}     {row[1]:.2f}    {row[2]:.2f}   |    {row[3]:.2f}    |  "
              f"{row[4]:.2f}  |  {row[5]:.2f}")


if __name__ == '__main__':
    gpt.run_command(main, 'head_stats.py') # a checkpoint that is not there: one line, no traceback
