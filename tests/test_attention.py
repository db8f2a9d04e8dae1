"""The self-attention chapters, claim by claim."""

import torch
from torch.nn import functional as F

import gpt


def test_three_versions_of_averaging_past_tokens_agree():
    # version 1: for loops; version 2: matmul with a normalised lower-triangular matrix; version 3: masked softmax
    torch.manual_seed(1337)
    B, T, C = 4, 8, 2
    x = torch.randn(B, T, C)
    xbow = torch.zeros(B, T, C)
    for b in range(B):
        for t in range(T):
            xbow[b, t] = torch.mean(x[b, :t+1], 0)
    wei = torch.tril(torch.ones(T, T))
    wei = wei / wei.sum(1, keepdim=True)
    xbow2 = wei @ x # (T, T) @ (B, T, C) -> (B, T, C)
    tril = torch.tril(torch.ones(T, T))
    wei = torch.zeros((T, T)).masked_fill(tril == 0, float('-inf'))
    xbow3 = F.softmax(wei, dim=-1) @ x
    assert torch.allclose(xbow, xbow2, atol=1e-6)
    assert torch.allclose(xbow, xbow3, atol=1e-6)
    assert not torch.allclose(xbow[:, 1:], x[:, 1:]) # it really averages: not the identity


def tiny_model(**kw):
    torch.manual_seed(0)
    args = dict(vocab_size=11, block_size=16, n_embd=32, n_head=4, n_layer=2, dropout=0.0)
    return gpt.GPTLanguageModel(**{**args, **kw}).eval()


def test_tokens_from_the_future_cannot_communicate():
    model = tiny_model()
    idx = torch.randint(11, (2, 16))
    logits, _ = model(idx)
    for t in range(15):
        changed = idx.clone()
        changed[:, t+1:] = (changed[:, t+1:] + 1 + torch.randint(10, changed[:, t+1:].shape)) % 11 # every later token differs
        assert (changed[:, t+1:] != idx[:, t+1:]).all()
        logits2, _ = model(changed)
        assert torch.allclose(logits[:, :t+1], logits2[:, :t+1], atol=1e-5), t # up to t: untouched
        assert not torch.allclose(logits[:, t+1:], logits2[:, t+1:], atol=1e-5) # after t: the change is seen


def test_the_past_does_communicate():
    # the mask hides the future only: change the first token and every later position feels it
    model = tiny_model()
    idx = torch.randint(11, (1, 16))
    changed = idx.clone()
    changed[0, 0] = (idx[0, 0] + 1) % 11
    diff = (model(idx)[0] - model(changed)[0]).abs().amax(-1)[0] # per position
    assert (diff > 1e-4).all()


def test_no_communication_across_the_batch_dimension():
    model = tiny_model()
    idx = torch.randint(11, (4, 16))
    logits, _ = model(idx)
    other = idx.clone()
    other[1:] = torch.randint(11, (3, 16))
    logits2, _ = model(other)
    assert torch.allclose(logits[0], logits2[0], atol=1e-5)
    assert torch.allclose(logits[0], model(idx[:1])[0][0], atol=1e-5) # alone or in a batch: the same


def test_head_is_causal_too():
    torch.manual_seed(0)
    head = gpt.Head(n_embd=32, head_size=8, block_size=16, dropout=0.0)
    x = torch.randn(2, 16, 32)
    y = x.clone()
    y[:, 10:] = torch.randn(2, 6, 32)
    assert torch.allclose(head(x)[:, :10], head(y)[:, :10], atol=1e-6)


def test_scaling_by_head_size_keeps_unit_variance():
    # with unit-variance q and k, q @ k^T has variance head_size; * head_size**-0.5 brings it back to 1,
    # so softmax stays diffuse at init instead of converging to one-hot
    torch.manual_seed(0)
    B, T, head_size = 64, 32, 64
    k = torch.randn(B, T, head_size)
    q = torch.randn(B, T, head_size)
    unscaled = q @ k.transpose(-2, -1)
    scaled = unscaled * head_size**-0.5
    assert abs(k.var() - 1) < 0.05 and abs(q.var() - 1) < 0.05
    assert abs(scaled.var() - 1) < 0.1
    assert abs(unscaled.var() / head_size - 1) < 0.1
    # the why: unscaled scores make softmax peaky
    assert F.softmax(unscaled, -1).amax(-1).mean() > 2 * F.softmax(scaled, -1).amax(-1).mean()


def test_batched_multi_head_attention_equals_separate_heads_concatenated():
    torch.manual_seed(0)
    n_embd, n_head, T = 48, 6, 12
    hs = n_embd // n_head
    mha = gpt.MultiHeadAttention(n_embd, n_head, hs, T, dropout=0.0).eval()
    heads = [gpt.Head(n_embd, hs, T, dropout=0.0).eval() for _ in range(n_head)]
    with torch.no_grad(): # give the separate heads the batched module's weights: rows q, then k, then v
        wq, wk, wv = mha.qkv.weight.split(n_embd, dim=0)
        for h, head in enumerate(heads):
            head.query.weight.copy_(wq[h*hs:(h+1)*hs])
            head.key.weight.copy_(wk[h*hs:(h+1)*hs])
            head.value.weight.copy_(wv[h*hs:(h+1)*hs])
    x = torch.randn(3, T, n_embd)
    # the lecture's MultiHeadAttention: the heads side by side, then the projection
    expected = mha.proj(torch.cat([head(x) for head in heads], dim=-1))
    assert torch.allclose(mha(x), expected, atol=1e-5)


def test_layernorm_at_init_normalises_each_token():
    torch.manual_seed(0)
    block = gpt.Block(n_embd=64, n_head=4, block_size=10, dropout=0.0)
    x = torch.randn(8, 10, 64) * 5 + 3 # far from mean 0, std 1
    out = block.ln1(x)
    assert torch.allclose(out.mean(-1), torch.zeros(8, 10), atol=1e-5) # per token, across its features
    assert torch.allclose(out.std(-1, unbiased=False), torch.ones(8, 10), atol=1e-3)
    assert not torch.allclose(out.mean(0), torch.zeros(10, 64), atol=0.1) # unlike batchnorm: not across the batch


def test_the_fused_attention_of_part_two_equals_the_lectures():
    # part two trains MultiHeadAttention as shipped by FusedAttention: both must give what part one's gives, the same
    # weights read the same way, in evaluation and in training (on a CPU, the same dropout under one seed)
    torch.manual_seed(0)
    model = tiny_model(dropout=0.25)
    x = torch.randint(11, (3, 16))
    lecture = model(x)[0]
    torch.manual_seed(1)
    lecture_training = model.train()(x)[0]
    fast = gpt.speed_up(model, gpt.SimpleNamespace(device='cpu', dtype='float32'), None, [])
    assert gpt.FusedAttention in {type(m) for m in fast.modules()}
    assert gpt.MultiHeadAttention not in {type(m) for m in fast.modules()}
    assert torch.allclose(fast.eval()(x)[0], lecture, atol=1e-5)
    torch.manual_seed(1)
    assert torch.allclose(fast.train()(x)[0], lecture_training, atol=1e-5)
    # which is why it runs for the code as shipped only: a change to the class's code changes its fingerprint
    # (change the class, check this test still holds, then record its new fingerprint in SHIPPED_ATTENTION)
    assert gpt.fingerprint(gpt.MultiHeadAttention) == gpt.SHIPPED_ATTENTION


def test_the_fused_attention_takes_any_head_size_the_class_is_given():
    # Block gives n_embd // n_head; a learner's Block may give another, and the class as shipped runs fused still
    torch.manual_seed(0)
    attention = gpt.MultiHeadAttention(32, 2, 8, 16, dropout=0.0) # two heads of 8: 16 channels into proj, not 32
    x = torch.randn(3, 16, 32)
    written = attention(x)
    attention.__class__ = gpt.FusedAttention
    assert torch.allclose(attention(x), written, atol=1e-6)


def test_tokens_from_the_future_cannot_communicate_in_training_either():
    # the training path (the fused kernel of part two, dropout on): the same masks, a different future
    model = gpt.speed_up(tiny_model(dropout=0.5).train(), gpt.SimpleNamespace(device='cpu', dtype='float32'), None, [])
    idx = torch.randint(11, (2, 16))
    changed = idx.clone()
    changed[:, 9:] = (idx[:, 9:] + 1) % 11
    torch.manual_seed(1)
    logits, _ = model(idx)
    torch.manual_seed(1)
    logits2, _ = model(changed)
    assert torch.allclose(logits[:, :9], logits2[:, :9], atol=1e-5)
    assert not torch.allclose(logits[:, 9:], logits2[:, 9:], atol=1e-5)
    torch.manual_seed(2)
    assert not torch.allclose(model(idx)[0], logits, atol=1e-5) # dropout is on: another mask, other logits
