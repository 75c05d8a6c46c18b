"""Decoding: batched beam search == per-clip reference, beam 1 == greedy, ensembles, masking, EOS and lengths."""
import copy

import pytest
import torch

from aacnb.captioning import build_captioner
from aacnb.decoding import (Stepper, beam_search, beam_search_reference, greedy_decode, sample_decode, strip)

TINY = dict(vocab_size=40, feature_dim=6, enc_hidden=8, d_model=16, nhead=2, dim_feedforward=32,
            gru_hidden=16, gru_emb_dim=8, attn_size=8, dropout=0.0, enc_dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained(decoder, layers, seed, steps=50):
    "A briefly trained tiny captioner: untrained ones loop on one token or stop at once, which tests nothing."
    torch.manual_seed(seed)
    m = build_captioner(decoder, layers, **TINY)
    g = torch.Generator().manual_seed(100 + seed)
    B, T, L = 16, 9, 10
    f, l = torch.randn(B, T, 6, generator=g), torch.randint(1, T + 1, (B,), generator=g)
    tok = torch.randint(4, TINY["vocab_size"], (B, L), generator=g)
    tok[:, 0] = 1
    for i, k in enumerate(torch.randint(2, L, (B,), generator=g).tolist()):  # captions of 1..8 words
        tok[i, k], tok[i, k + 1:] = 2, 0
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = m({"features": f, "feature_lengths": l, "tokens": tok})["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
    return m.eval()


_CACHE = {}


def _models(seed=0):
    if not _CACHE:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        _CACHE.update(transformer=_trained("transformer", 2, 0), transformer4=_trained("transformer", 4, 1),
                      gru=_trained("gru", 1, 2))
        torch.set_num_threads(n)
    return {k: copy.deepcopy(v) for k, v in _CACHE.items()}


def _inputs(B=10, T=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 6, generator=g), torch.randint(1, T + 1, (B,), generator=g)


@pytest.mark.parametrize("name", ["transformer", "transformer4", "gru", "ensemble"])
@pytest.mark.parametrize("beam", [2, 3, 5])
def test_batched_beam_search_equals_per_clip_reference(name, beam):
    ms = _models()
    model = list(ms.values()) if name == "ensemble" else ms[name]
    f, l = _inputs()
    got = beam_search(model, f, l, beam_size=beam, max_len=12)             # the authors': score per token
    assert got == beam_search_reference(model, f, l, beam_size=beam, max_len=12)
    # ranked on raw log-probabilities another finished beam may win, in both the same way
    raw = beam_search(model, f, l, beam_size=beam, max_len=12, length_normalize=False)
    assert raw == beam_search_reference(model, f, l, beam_size=beam, max_len=12, length_normalize=False)


@pytest.mark.parametrize("name", ["transformer", "gru"])
def test_recomputing_reference_equals_cached_decoding(name):
    m = _models()[name]
    f, l = _inputs(B=4)
    assert (beam_search_reference(m, f, l, beam_size=3, max_len=10, recompute=True)
            == beam_search(m, f, l, beam_size=3, max_len=10))


@pytest.mark.parametrize("name", ["transformer", "gru", "ensemble"])
def test_beam_of_one_is_greedy(name):
    ms = _models()
    model = list(ms.values()) if name == "ensemble" else ms[name]
    f, l = _inputs()
    assert beam_search(model, f, l, beam_size=1, max_len=12) == greedy_decode(model, f, l, max_len=12)


@pytest.mark.parametrize("name", ["transformer", "gru"])
@pytest.mark.parametrize("length_normalize", [False, True])
def test_settled_clips_leave_the_batch(name, length_normalize):
    # A clip whose best finished caption no live beam can beat is settled and dropped: later steps decode only the
    # clips still running, and the captions are those of the per-clip reference, which runs the authors' loop to
    # max_len (or until no live beam is left) for each clip on its own.
    m = _models()[name]
    f, l = _inputs()
    rows, step = [], m.step
    def counting_step(tokens, cache):
        rows.append(tokens.shape[0])
        return step(tokens, cache)
    m.step = counting_step
    kw = dict(beam_size=3, max_len=12, length_normalize=length_normalize)
    caps, scores = beam_search(m, f, l, return_scores=True, **kw)
    assert rows[0] == 10 and rows[1] == 30                  # first word: one row per clip; then 3 beams each
    assert rows[1:] == sorted(rows[1:], reverse=True) and all(r % 3 == 0 for r in rows[1:])
    if not length_normalize:                                # the bound is tight: clips leave early
        assert rows[-1] < 30 and len(rows) < 12, rows
    assert caps == beam_search_reference(m, f, l, **kw)
    m.step = step
    assert beam_search(m, f, l, return_scores=True, **kw) == (caps, scores)


def test_length_normalised_scores_are_per_token():
    # The chosen caption's score is its log-probability (eos included) over its tokens, as the authors rank them.
    m = _models()["transformer"]
    f, l = _inputs(B=4)
    caps, scores = beam_search(m, f, l, beam_size=3, max_len=12, return_scores=True)
    c = m.config
    with torch.no_grad():
        for i, (cap, score) in enumerate(zip(caps, scores)):
            seq = torch.tensor([[c.bos_id, *cap, c.eos_id]])
            logp = torch.log_softmax(m.logits({"features": f[i:i + 1], "feature_lengths": l[i:i + 1]}, seq), -1)
            total = logp[0].gather(1, seq[0, 1:, None]).sum()
            n = len(cap) + 1 if len(cap) < 12 else 12        # at max_len no <eos> was emitted
            if len(cap) == 12:
                total = total - logp[0, -1, c.eos_id]
            assert abs(float(total) / n - score) < 1e-4, (i, cap, float(total) / n, score)


def test_beam_search_finds_higher_scores_than_greedy():
    m = _models()["transformer"]
    f, l = _inputs()
    caps, scores = beam_search(m, f, l, beam_size=4, max_len=12, return_scores=True)
    assert len({len(c) for c in caps}) > 1  # captions end at different steps: EOS bookkeeping is exercised
    _, g_scores = beam_search(m, f, l, beam_size=1, max_len=12, return_scores=True)
    assert all(s >= g - 1e-5 for s, g in zip(scores, g_scores))
    assert any(s > g + 1e-4 for s, g in zip(scores, g_scores))


@pytest.mark.parametrize("name", ["transformer", "gru"])
def test_ensemble_of_one_is_the_model(name):
    m = _models()[name]
    f, l = _inputs()
    assert beam_search([m], f, l, beam_size=3) == beam_search(m, f, l, beam_size=3)
    assert greedy_decode([m], f, l) == greedy_decode(m, f, l)
    # two copies of one model average to the same log-probs
    assert beam_search([m, m], f, l, beam_size=3) == beam_search(m, f, l, beam_size=3)


def test_ensemble_averages_log_probs():
    ms = _models()
    f, l = _inputs(B=3)
    a, b = ms["transformer"], ms["gru"]
    tok = torch.full((3,), 1)
    got = Stepper([a, b], f, l).step(tok)
    mean = (Stepper([a], f, l).step(tok) + Stepper([b], f, l).step(tok)) / 2
    assert (mean.exp().sum(-1) < 1 - 1e-3).all()          # a geometric mean of distributions falls short of 1
    torch.testing.assert_close(got, torch.log_softmax(mean, -1))   # the authors' ensemble renormalises it
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(3))


@pytest.mark.parametrize("name", ["transformer", "gru"])
def test_padding_does_not_change_captions(name):
    m = _models()[name]
    f, l = _inputs()
    g = f.clone()
    for i, n in enumerate(l.tolist()):
        g[i, n:] = torch.randn_like(g[i, n:]) * 50
    assert beam_search(m, g, l, beam_size=3) == beam_search(m, f, l, beam_size=3)
    assert greedy_decode(m, g, l) == greedy_decode(m, f, l)


def test_eos_and_max_len_bookkeeping():
    m = _models()["transformer"]
    f, l = _inputs(B=4)
    with torch.no_grad():
        m.decoder.classifier.bias[2] = 100.0  # <eos> always wins: empty captions
    assert beam_search(m, f, l, beam_size=3) == [[]] * 4
    assert greedy_decode(m, f, l) == [[]] * 4
    seqs = greedy_decode(m, f, l, return_tensors=True)
    assert seqs.shape == (4, 1) and (seqs == 2).all()
    with torch.no_grad():
        m.decoder.classifier.bias[2] = -100.0  # <eos> never: captions run to max_len
    assert all(len(c) == 7 for c in beam_search(m, f, l, beam_size=3, max_len=7))
    assert all(len(c) == 7 for c in greedy_decode(m, f, l, max_len=7))


def test_sampling_is_reproducible_and_returns_log_probs():
    m = _models()["gru"]
    f, l = _inputs(B=5)
    a = sample_decode(m, f, l, generator=torch.Generator().manual_seed(3))
    b = sample_decode(m, f, l, generator=torch.Generator().manual_seed(3))
    assert a == b
    # a very low temperature is greedy
    assert sample_decode(m, f, l, temperature=1e-4, generator=torch.Generator().manual_seed(0)) == greedy_decode(m, f, l)
    m.train()
    toks, lps = sample_decode(m, f, l, max_len=8, return_logprobs=True, generator=torch.Generator().manual_seed(1))
    assert toks.shape == lps.shape and lps.requires_grad
    after_eos = torch.cumsum((toks == 2).long(), 1) - (toks == 2).long() > 0
    assert (lps[after_eos] == 0).all() and (toks[after_eos] == 0).all()
    lps.sum().backward()
    with pytest.raises(ValueError, match="temperature"):
        sample_decode(m, f, l, temperature=0)


@pytest.mark.parametrize("name", ["transformer", "gru"])
def test_several_samples_per_clip_share_one_encoding(name):
    # S samples of a clip are S rows over one encoding: the same draws and log-probs as sampling S copies of it
    m = _models()[name]
    f, l = _inputs(B=4)
    S, seen = 3, []
    m.encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    toks, lps = sample_decode(m, f, l, max_len=8, return_logprobs=True, num_samples=S,
                              generator=torch.Generator().manual_seed(5))
    assert seen == [4] and toks.shape[0] == 4 * S
    toks_r, lps_r = sample_decode(m, f.repeat_interleave(S, 0), l.repeat_interleave(S, 0), max_len=8,
                                  return_logprobs=True, generator=torch.Generator().manual_seed(5))
    assert seen == [4, 4 * S]
    assert torch.equal(toks, toks_r) and torch.allclose(lps, lps_r, atol=1e-5)
    lps.sum().backward()                                   # one backward through the one encoding
    assert m.encoder.gru.weight_ih_l0.grad is not None
    with pytest.raises(ValueError, match="num_samples"):
        sample_decode(m, f, l, num_samples=0)


def test_errors():
    ms = _models()
    f, l = _inputs(B=2)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(ms["gru"], f, l, beam_size=0)
    with pytest.raises(ValueError, match="max_len"):
        beam_search(ms["gru"], f, l, max_len=0)
    other = build_captioner("gru", **{**TINY, "vocab_size": 30})
    with pytest.raises(ValueError, match="vocabulary"):
        beam_search([ms["gru"], other], f, l)
    assert strip([1, 5, 6, 2, 7]) == [5, 6]
