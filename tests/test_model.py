"""The transformer chapters: size, init, training, generation."""
import math

import torch

import bigram
import gpt


def test_lecture_configuration_has_10_788_929_parameters():
    model = gpt.GPTLanguageModel(vocab_size=65, block_size=256, n_embd=384, n_head=6, n_layer=6, dropout=0.2)
    assert sum(p.numel() for p in model.parameters()) == 10788929


def test_the_hyperparameter_block_is_the_lectures():
    # (as written: once a run has set up, gpt's names hold its values)
    assert [gpt.HYPERPARAMETERS[name] for name in ('batch_size', 'block_size', 'max_iters', 'eval_interval',
            'learning_rate', 'eval_iters', 'n_embd', 'n_head', 'n_layer', 'dropout')] == [64, 256, 5000, 500, 3e-4,
                                                                                         200, 384, 6, 6, 0.2]
    assert (bigram.batch_size, bigram.block_size, bigram.max_iters, bigram.eval_interval, bigram.learning_rate,
            bigram.eval_iters) == (32, 8, 3000, 300, 1e-2, 200)


def test_init_weights_normal_002_and_zero_biases():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 64, 128, 4, 2)
    for name, p in model.named_parameters():
        if name.endswith('bias') and 'ln' not in name:
            assert (p == 0).all(), name
        elif p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.003, name


def test_fresh_model_loss_is_near_ln_vocab_size():
    torch.manual_seed(0)
    for vocab_size in (11, 65):
        model = gpt.GPTLanguageModel(vocab_size, 32, 64, 4, 2).eval()
        idx = torch.randint(vocab_size, (8, 32))
        _, loss = model(idx, torch.randint(vocab_size, (8, 32)))
        assert abs(loss.item() - math.log(vocab_size)) < 0.1


def test_tiny_gpt_overfits_one_batch():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 16, 64, 4, 2)
    opt = gpt.configure_optimizer(model, 3e-3, 0.0, 0.99)
    x = torch.randint(65, (4, 16))
    y = torch.randint(65, (4, 16))
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * math.log(65) # memorised: random targets are learnable only by heart


def test_generate_appends_max_new_tokens_inside_the_vocabulary_past_block_size():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(11, 8, 32, 4, 1).eval()
    idx = torch.randint(11, (2, 5))
    out = model.generate(idx, max_new_tokens=30) # runs far past block_size=8 by cropping the context
    assert out.shape == (2, 35)
    assert torch.equal(out[:, :5], idx)
    assert out.min() >= 0 and out.max() < 11


def test_generate_repeats_under_the_same_seed_and_differs_under_another():
    model = gpt.GPTLanguageModel(11, 8, 32, 4, 1).eval()
    idx = torch.zeros((1, 1), dtype=torch.long)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(model.generate(idx, max_new_tokens=50))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_top_k_1_is_greedy_and_low_temperature_approaches_it():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(11, 8, 32, 4, 1).eval()
    idx = torch.zeros((1, 1), dtype=torch.long)
    greedy = idx
    for _ in range(10):
        greedy = torch.cat([greedy, model(greedy[:, -8:])[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(idx, 10, top_k=1), greedy)
    assert torch.equal(model.generate(idx, 10, temperature=1e-4), greedy)


def test_bigram_generate_and_loss():
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(11)
    idx = torch.zeros((1, 1), dtype=torch.long)
    assert model.generate(idx, 20).shape == (1, 21)
    _, loss = model(torch.randint(11, (4, 8)), torch.randint(11, (4, 8)))
    assert loss.item() > math.log(11) # N(0,1) init: worse than uniform, as the lecture notes


def test_bigram_generate_draws_from_the_last_tokens_row():
    # a table where each token surely predicts one other: token i is followed by 3i+1 mod 11
    vocab_size = 11
    model = bigram.BigramLanguageModel(vocab_size)
    after = [(3 * i + 1) % vocab_size for i in range(vocab_size)]
    with torch.no_grad():
        model.token_embedding_table.weight.fill_(-1e4)
        model.token_embedding_table.weight[range(vocab_size), after] = 1e4
    idx = torch.tensor([[2, 5, 9], [0, 0, 4]]) # first and last tokens differ, and so do what they predict
    expected = idx.tolist()
    for row in expected:
        for _ in range(6):
            row.append(after[row[-1]])
    assert model.generate(idx, 6).tolist() == expected, 'each new token must follow the last one, not the first'


def test_bf16_autocast_gives_the_fp32_loss():
    # the GPU path trains under bf16 autocast: same model, same loss to bf16's precision (checked on the CPU here)
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 32, 64, 4, 2).eval()
    x, y = torch.randint(65, (4, 32)), torch.randint(65, (4, 32))
    _, loss = model(x, y)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits16, loss16 = model(x, y)
    assert logits16.dtype == torch.bfloat16
    assert abs(loss16.item() - loss.item()) < 0.02


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    lr = {}
    for shape in ('cosine', 'linear'):
        c = gpt.SimpleNamespace(learning_rate=1e-3, warmup_iters=10, lr_decay=shape, min_lr=1e-4, max_iters=110)
        lr[shape] = lrs = [gpt.get_lr(it, c) for it in range(111)]
        assert lrs[0] == 1e-4 and abs(lrs[9] - 1e-3) < 1e-12 # linear warmup
        assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) # then only down
        assert abs(lrs[60] - 5.5e-4) < 1e-9 and abs(lrs[110] - 1e-4) < 1e-12 # halfway at the middle, then min_lr
    assert abs(lr['linear'][35] - 7.75e-4) < 1e-9 # a quarter of the way down: a straight line
    assert lr['cosine'][35] > 8.6e-4 # cosine stays up longer, then falls faster
    lecture = gpt.SimpleNamespace(learning_rate=3e-4, warmup_iters=0, lr_decay='none', min_lr=0.0, max_iters=5000)
    assert {gpt.get_lr(it, lecture) for it in range(0, 5000, 7)} == {3e-4} # the lecture's constant rate
