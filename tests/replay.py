"""
The lecture, replayed: the model as it stands at each step of the video, trained as the lecture trained it, and its
val loss beside the number the lecture reports.

    python tests/replay.py

Every stage is built from bigram.py's and gpt.py's own pieces (BigramLanguageModel, the embeddings, Head,
MultiHeadAttention, Block, GPTLanguageModel). Where the lecture's model was still simpler at that point, the piece it
did not have yet is taken out (the projection after the heads, layernorm) or its first, simpler form is put in (a
feed-forward without widening or projection). The stages train two at a time, one thread each, and are evaluated
once, at the end: with the lecture's estimate_loss (200 random batches of each split) and on the whole val split.
"""
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import bigram # noqa: E402
import gpt # noqa: E402

# the lecture's stages (its companion repository's commits of 2023-01-16): what the model is, and how it trained
STAGES = [
    # name, chapter, the lecture's val loss (None: it reports none), learning rate, steps
    ('bigram', '00:34:53 the bigram', 2.5, 1e-2, 3000),
    ('positions', '01:00:18 positional encoding', None, 1e-2, 3000),
    ('one head', '01:19:11 one attention block', 2.4, 1e-3, 5000),
    ('multi-head', '01:21:59 multi-head', 2.28, 1e-3, 5000),
    ('multi-head, C**-0.5', '01:21:59 multi-head', 2.28, 1e-3, 5000),
    ('feed-forward', '01:24:25 feedforward', 2.24, 1e-3, 5000),
    ('residual blocks', '01:26:48 residual', 2.08, 1e-3, 5000),
    ('layernorm', '01:32:51 layernorm', 2.06, 1e-3, 5000),
]
BATCH_SIZE, BLOCK_SIZE, N_EMBD, N_HEAD, N_LAYER, EVAL_ITERS, SEED = 32, 8, 32, 4, 3, 200, 1337
SCALED_UP = 1.48 # the lecture's last number: gpt.py's own configuration, on an A100
INPUT = os.path.join(ROOT, 'input.txt')


def build(stage, vocab_size):
    """The model at this stage of the lecture, with PyTorch's default initialisation, as the lecture had it then."""
    if stage == 'bigram':
        return bigram.BigramLanguageModel(vocab_size)
    if stage in ('residual blocks', 'layernorm'):
        model = gpt.GPTLanguageModel(vocab_size, BLOCK_SIZE, N_EMBD, N_HEAD, N_LAYER)
        if stage == 'residual blocks': # layernorm came next
            for block in model.blocks:
                block.ln1 = block.ln2 = nn.Identity()
            model.ln_f = nn.Identity()
    else: # before Block: the token and position embeddings, then what the lecture put between them and lm_head
        model = gpt.GPTLanguageModel(vocab_size, BLOCK_SIZE, N_EMBD, N_HEAD, n_layer=0)
        model.ln_f = nn.Identity()
        if stage == 'one head':
            model.blocks = nn.Sequential(gpt.Head(N_EMBD, N_EMBD, BLOCK_SIZE, dropout=0.0))
        elif stage != 'positions':
            heads = gpt.MultiHeadAttention(N_EMBD, N_HEAD, N_EMBD // N_HEAD, BLOCK_SIZE, dropout=0.0)
            heads.proj = nn.Identity() # the heads' outputs concatenated: the projection came with the residual blocks
            if stage == 'multi-head, C**-0.5':
                scale_by_C(heads)
            model.blocks = nn.Sequential(heads)
            if stage == 'feed-forward': # its first form: per token, no widening, no projection
                model.blocks.append(nn.Sequential(nn.Linear(N_EMBD, N_EMBD), nn.ReLU()))
    for module in model.modules(): # undo GPTLanguageModel's normal(0, 0.02): it came after the video
        if hasattr(module, 'reset_parameters'):
            module.reset_parameters()
    return model


def scale_by_C(heads):
    """The lecture's scores before its correction: q @ k^T * C**-0.5 instead of head_size**-0.5. Multiplying the
    queries by sqrt(head_size / C) as they are computed makes one into the other, same weights, same gradients."""
    queries = N_EMBD # the first N_EMBD outputs of qkv are the heads' queries
    scale = torch.ones(3 * N_EMBD)
    scale[:queries] = (N_EMBD // N_HEAD / N_EMBD) ** 0.5
    heads.qkv.register_forward_hook(lambda module, args, out: out * scale)


def train_stage(stage):
    """The lecture's training loop for one stage, evaluated once at the end."""
    torch.set_num_threads(1) # two stages at a time, one core each: models this small gain nothing from a second thread
    name, chapter, lecture, learning_rate, max_iters = stage
    torch.manual_seed(SEED)
    text = gpt.load_text(INPUT, gpt.data_url, BLOCK_SIZE)
    chars = sorted(set(text))
    train_data, val_data = gpt.split_data(text, gpt.tokenizer(chars)[0])
    model = build(name, len(chars))
    # the lecture's optimizer: AdamW's defaults (weight decay 0.01 on every parameter); fused, the same update faster
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, fused=True)
    t0 = time.time()
    for _ in range(max_iters):
        xb, yb = gpt.get_batch(train_data, BATCH_SIZE, BLOCK_SIZE, 'cpu')
        _, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.time() - t0
    losses = gpt.estimate_loss(model, {'train': train_data, 'val': val_data}, EVAL_ITERS, BATCH_SIZE, BLOCK_SIZE, 'cpu')
    return dict(stage=name, chapter=chapter, lecture=lecture, train=losses['train'], val=losses['val'],
                whole_val=gpt.whole_split_loss(model.eval(), val_data, BLOCK_SIZE),
                params=sum(p.numel() for p in model.parameters()), seconds=seconds)


def replay(processes=2):
    """Every stage's results, in the lecture's order."""
    gpt.load_text(INPUT, gpt.data_url) # downloaded once, here, not by both workers
    order = sorted(STAGES, key=lambda s: -s[4]) # the long stages first: both workers finish together
    results = {}
    with multiprocessing.get_context('spawn').Pool(processes) as pool: # spawn: fresh processes, no forked threads
        for r in pool.imap_unordered(train_stage, order):
            print(f"  {r['stage']}: val {r['val']:.4f} after {r['seconds']:.1f} s", file=sys.stderr, flush=True)
            results[r['stage']] = r
    return [results[s[0]] for s in STAGES]


def scaled_up(*overrides, device='cuda'):
    """The lecture's last stage where there is a GPU: gpt.py's lecture configuration, run as a user runs it.
    Returns its last val estimate, its whole val split loss, its parameters and seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = os.path.join(tmp, 'gpt.pt')
        t0 = time.time()
        subprocess.run([sys.executable, os.path.join(ROOT, 'gpt.py'), '--config=lecture', f'--input_path={INPUT}',
                        f'--ckpt_path={ckpt_path}', '--max_new_tokens=0', *overrides], check=True,
                       stdout=subprocess.DEVNULL) # its log would break up the table; errors and progress: stderr
        seconds = time.time() - t0
        ckpt = gpt.load_checkpoint(ckpt_path)
        c = ckpt['config']
        model = gpt.GPTLanguageModel(len(ckpt['chars']), c['block_size'], c['n_embd'], c['n_head'], c['n_layer'])
        model.load_state_dict(ckpt['model'])
        _, val_data = gpt.split_data(gpt.load_text(INPUT, gpt.data_url), gpt.tokenizer(ckpt['chars'])[0])
        with open(os.path.join(tmp, 'gpt.csv')) as f:
            last = f.read().split()[-1].split(',') # step,train_loss,val_loss,elapsed_s of the last evaluation
        return float(last[2]), gpt.whole_split_loss(model.to(device).eval(), val_data.to(device), c['block_size']), \
            sum(p.numel() for p in model.parameters()), seconds


def table(results):
    lines = ['| stage | chapter | lecture | ours: estimate_loss | ours: whole val split | parameters | time |',
             '|---|---|---|---|---|---|---|']
    for r in results:
        lecture = '-' if r['lecture'] is None else f"{r['lecture']:.2f}"
        lines.append(f"| {r['stage']} | {r['chapter']} | {lecture} | {r['val']:.4f} | {r['whole_val']:.4f} | "
                     f"{r['params']:,} | {r['seconds']:.0f} s |")
    return '\n'.join(lines)


def main(gpu=torch.cuda.is_available(), processes=2):
    t0 = time.time()
    print(f"replaying the lecture's stages on {INPUT}, {processes} at a time (about a minute on 2 CPU cores)",
          flush=True)
    results = replay(processes)
    print(table(results))
    if gpu:
        val, whole, params, seconds = scaled_up()
        print(f"| scaled up | 01:37:49 scaling up | {SCALED_UP} | {val:.4f} | {whole:.4f} | {params:,} | "
              f"{seconds:.0f} s |")
    else:
        print(f"| scaled up | 01:37:49 scaling up | {SCALED_UP} | not run: no GPU here | | 10,788,929 | |")
        print("the scaled-up stage is gpt.py's lecture configuration (--config=lecture), about a day on a CPU; "
              "python gpt.py trains the smaller CPU configuration in 10 minutes instead: see the README")
    print(f"replayed in {time.time() - t0:.0f} s")
    return results


if __name__ == '__main__':
    main()
