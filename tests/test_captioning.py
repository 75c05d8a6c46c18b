"""Captioners: Table 1 parameter counts, shapes, masking, cached == parallel decoding, scheduled sampling, overfit."""
import pytest
import torch

from aacnb.captioning import (CaptionCollator, CaptionConfig, build_captioner, encode_captions)
from aacnb.core import ConfigError, count_parameters
from aacnb.decoding import greedy_decode

TINY = dict(vocab_size=20, feature_dim=6, enc_hidden=8, d_model=16, nhead=2, dim_feedforward=32,
            gru_hidden=16, gru_emb_dim=8, attn_size=8, dropout=0.0, enc_dropout=0.0)
DECODERS = ["transformer", "gru"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(B=3, T=7, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, TINY["feature_dim"], generator=g)
    lens = torch.tensor([T, 4, 2][:B])
    tokens = torch.randint(4, TINY["vocab_size"], (B, L), generator=g)
    tokens[:, 0] = 1
    tokens[0, -1] = 2
    tokens[1, 3], tokens[1, 4:] = 2, 0
    tokens[2, 2], tokens[2, 3:] = 2, 0
    return {"features": feats, "feature_lengths": lens, "tokens": tokens}


@pytest.mark.parametrize("decoder,layers,table1,authors", [("transformer", 2, 10.4e6, 10_412_560),
                                                           ("transformer", 4, 12.5e6, 12_519_440),
                                                           ("gru", 1, 14.6e6, 14_584_080)])
def test_table1_parameter_counts(decoder, layers, table1, authors):
    # Counted with the authors' Clotho vocabulary (4,368 words) and CNN14 frame features (2,048-d).
    n = count_parameters(build_captioner(decoder, layers, vocab_size=4368, feature_dim=2048))
    assert abs(n - table1) / table1 < 0.05
    # the authors' code stores the 100 x 256 sinusoid table as a frozen Parameter; we keep it as a buffer
    assert n + (100 * 256 if decoder == "transformer" else 0) == authors


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="CaptionConfig.d_model"):
        CaptionConfig(d_model=30, nhead=4)
    with pytest.raises(ConfigError, match="ss_mode"):
        CaptionConfig(ss_mode="beam")


@pytest.mark.parametrize("decoder", DECODERS)
def test_shapes_and_friendly_errors(decoder):
    m = build_captioner(decoder, **TINY).eval()
    b = _batch()
    out = m(b)
    assert out["logits"].shape == (3, 5, 20) and out["loss"].ndim == 0
    mem = m.encode(b["features"], b["feature_lengths"])
    assert mem["frames"].shape == (3, 7, 16) and mem["clip"].shape == (3, 16)
    with pytest.raises(ValueError, match="feature_dim"):
        m.encode(torch.randn(2, 5, 9))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m({**b, "tokens": torch.full((3, 4), 25)})
    with pytest.raises(KeyError, match="tokens"):
        m({"features": b["features"]})


@pytest.mark.parametrize("decoder", DECODERS)
def test_padded_frames_are_ignored(decoder):
    m = build_captioner(decoder, **TINY).eval()
    b = _batch()
    ref = m(b)["logits"]
    f = b["features"].clone()
    f[1, 4:] = 1e3
    f[2, 2:] = -7.0
    torch.testing.assert_close(m({**b, "features": f})["logits"], ref)
    # and the padded clip alone, unpadded, gives the same logits
    one = {"features": b["features"][2:3, :2], "feature_lengths": torch.tensor([2]), "tokens": b["tokens"][2:3]}
    torch.testing.assert_close(m(one)["logits"][0], ref[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
def test_decoder_is_causal(decoder):
    m = build_captioner(decoder, **TINY).eval()
    b = _batch()
    ref = m(b)["logits"]
    t = b["tokens"].clone()
    t[:, 3:] = 5  # change the future (inputs 3..): logits at positions 0..2 must not move
    out = m({**b, "tokens": t})["logits"]
    torch.testing.assert_close(out[:, :3], ref[:, :3])
    assert not torch.allclose(out[:, 3:], ref[:, 3:])


@pytest.mark.parametrize("decoder", DECODERS)
def test_cached_steps_equal_parallel_forward(decoder):
    m = build_captioner(decoder, **TINY).eval()
    b = _batch()
    ref = m(b)["logits"]
    cache = m.init_cache(m.encode(b["features"], b["feature_lengths"]))
    steps = []
    for t in range(b["tokens"].shape[1] - 1):
        logits, cache = m.step(b["tokens"][:, t], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("grad", [True, False])
def test_long_cached_decoding_with_reordering(decoder, grad):
    # Three hypotheses about each of two clips, as in beam search (a clip's hypotheses in consecutive rows, its
    # audio stored once), decoded for 24 positions, with gradients (SCST sampling: the logits stay differentiable)
    # and without (decoding: keys and values written in place). Mid-caption the hypotheses of each clip change
    # places, one is dropped and another duplicated; each must go on exactly as if decoded alone.
    m = build_captioner(decoder, **TINY).eval()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 7, TINY["feature_dim"], generator=g)
    tokens = torch.randint(4, TINY["vocab_size"], (6, 25), generator=g)
    tokens[:, 0] = 1
    ref = m({"features": feats.repeat_interleave(3, 0), "tokens": tokens})["logits"].detach()   # (6, 24, V)
    perm = torch.tensor([2, 0, 2, 4, 5, 3])
    with torch.set_grad_enabled(grad):
        cache = m.init_cache(m.encode(feats))
        steps, rows = [], torch.arange(6)
        for t in range(24):
            if t == 10:
                cache, rows = m.reorder_cache(cache, perm), rows[perm]
                steps = [s[perm] for s in steps]
            logits, cache = m.step(tokens[rows, t], cache)
            steps.append(logits)
        out = torch.stack(steps, 1)
    assert out.requires_grad == grad
    torch.testing.assert_close(out.detach(), ref[rows], atol=1e-5, rtol=1e-5)


class _State:
    def __init__(self, progress):
        self.progress = progress


@pytest.mark.parametrize("decoder", DECODERS)
def test_scheduled_sampling(decoder):
    torch.manual_seed(0)
    m = build_captioner(decoder, **{**TINY, "tf_end": 0.0}).train()
    b = _batch()
    assert m.teacher_forcing_prob(0.0) == 1.0 and m.teacher_forcing_prob(0.5) == 0.5
    # progress 0: teacher forcing only, the same loss as forward
    torch.testing.assert_close(m.training_step(b, _State(0.0)), m(b)["loss"])
    # progress 1 with tf_end=0: every input after <bos> is the model's own prediction
    loss = m.training_step(b, _State(1.0))
    assert torch.isfinite(loss) and not torch.isclose(loss, m(b)["loss"])
    loss.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("decoder", DECODERS)
def test_stepwise_scheduled_sampling_is_the_authors(decoder, monkeypatch):
    # One coin per step for the whole batch (the authors' run.py / *_model.py): a lost coin makes the step see the
    # model's own outputs so far (a Transformer: <bos> + every earlier step's argmax as its whole prefix; the GRU:
    # its previous argmax as the input word). Coins pinned here: steps 0, 1, 3 gold, steps 2, 4 lost.
    torch.manual_seed(0)
    m = build_captioner(decoder, **{**TINY, "tf_end": 0.5}).eval()        # eval: no dropout, exact comparison
    b = _batch()
    inp, L = b["tokens"][:, :-1], b["tokens"].shape[1] - 1
    coins = torch.tensor([0.0, 0.0, 0.9, 0.0, 0.9])                        # rand < p (0.5 at progress 1) is gold
    draws = []
    monkeypatch.setattr(torch, "rand", lambda *a, **k: draws.append(a) or coins.clone())
    got = m._stepwise_sampling(inp, m.encode(b["features"], b["feature_lengths"]), 0.5)
    assert draws == [(L,)]                                                 # one coin per step, not per token
    with torch.no_grad():
        mem = m.encode(b["features"], b["feature_lengths"])
        seq, want = [], []
        for t in range(L):
            gold = t in (0, 1, 3)
            if decoder == "transformer":
                prefix = inp[:, :t + 1] if gold else torch.cat([inp[:, :1], *[s[:, None] for s in seq]], 1)
                lg = m.decoder(prefix, mem)[:, -1]
            else:
                words = [inp[:, u] if u in (0, 1, 3) else seq[u - 1] for u in range(t + 1)]
                lg = m.decoder(torch.stack(words, 1), mem)[:, -1]
            want.append(lg); seq.append(lg.argmax(-1))
    torch.testing.assert_close(got, torch.stack(want, 1), atol=1e-5, rtol=1e-5)


def test_report_schedule_default():
    m = build_captioner("transformer", **TINY)
    assert m.teacher_forcing_prob(1.0) == pytest.approx(0.7)


@pytest.mark.parametrize("decoder", DECODERS)
def test_tiny_overfit(decoder):
    torch.manual_seed(0)
    m = build_captioner(decoder, **{**TINY, "label_smoothing": 0.0})
    b = _batch()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss = m(b)["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    m.eval()
    got = greedy_decode(m, b["features"], b["feature_lengths"], max_len=8)
    want = [[t for t in row[1:] if t not in (0, 2)] for row in b["tokens"].tolist()]
    want = [w[:list(row[1:]).index(2)] if 2 in row[1:] else w for w, row in zip(want, b["tokens"].tolist())]
    assert got == want


def test_collator_and_encode_captions():
    from aacnb.text import Vocabulary
    vocab = Vocabulary.build(["a dog barks", "rain falls on a roof"])
    items = [{"audio_id": "x", "features": torch.zeros(4, 3), "caption": "A dog barks!"},
             {"audio_id": "y", "features": torch.ones(2, 3), "caption": "rain falls"}]
    b = CaptionCollator(vocab)(items)
    assert b["features"].shape == (2, 4, 3) and b["feature_lengths"].tolist() == [4, 2]
    assert vocab.decode(b["tokens"][0].tolist()) == "a dog barks"
    assert b["tokens"][1].tolist()[-1] == vocab.pad_id and b["audio_id"] == ["x", "y"]
    t = encode_captions(["rain falls on a roof"], vocab, max_len=4)
    assert t.shape == (1, 4) and t[0, -1].item() == vocab.eos_id
    with pytest.raises(ValueError, match="frame features"):
        CaptionCollator(vocab)([{"audio_id": "z", "features": torch.zeros(3), "caption": "a"}])


def test_fit_trains_a_captioner_and_the_checkpoint_rebuilds(tmp_path):
    from aacnb.checkpoints import build_from_checkpoint
    from aacnb.train_config import TrainConfig
    from aacnb.training import fit
    from aacnb.text import Vocabulary
    torch.manual_seed(0)
    caps = ["a dog barks", "rain falls", "a car passes", "birds sing"]
    vocab = Vocabulary.build(caps)
    items = [{"audio_id": str(i), "features": torch.randn(5, 6), "caption": c} for i, c in enumerate(caps)]
    kwargs = {**TINY, "vocab_size": len(vocab)}
    model = build_captioner("transformer", **kwargs)
    cfg = TrainConfig.captioning_xe(epochs=2, batch_size=2, warmup_steps=1, lr=1e-3, monitor="", progress=False,
                                    device="cpu", log_every=1)
    seen = []
    orig = model.training_step
    model.training_step = lambda batch, state: (seen.append(state.progress), orig(batch, state))[1]
    fit(model, items, cfg, tmp_path, collate_fn=CaptionCollator(vocab),
        model_config={"builder": "aacnb.captioning:build_captioner", "kwargs": {"decoder": "transformer", **kwargs},
                      "vocab": vocab.itos})
    assert seen[0] == 0.0 and 0 < seen[-1] < 1
    again = build_from_checkpoint(tmp_path / "last.pt")
    feats = torch.randn(2, 5, 6)
    model.eval()
    assert greedy_decode(again, feats, max_len=5) == greedy_decode(model, feats, max_len=5)


def _write_tone(path, f0, seconds=1.0):
    import numpy as np
    import soundfile as sf
    t = np.arange(int(32000 * seconds)) / 32000
    sf.write(path, 0.3 * np.sin(2 * np.pi * f0 * t), 32000)


def test_caption_cli_with_extractor_and_ensemble(tmp_path, capsys):
    import json
    from aacnb.caption import AudioCaptioner, cli_caption
    from aacnb.cli import main
    from aacnb.core import save_torch
    from aacnb.encoders import Cnn14
    from aacnb.text import Vocabulary
    torch.manual_seed(0)
    enc_kwargs = {"width": 1 / 16, "audioset_head": False}  # 128-d frames
    enc = Cnn14(**enc_kwargs)
    save_torch({"model": enc.state_dict(), "model_config": {"builder": "aacnb.encoders:Cnn14", "kwargs": enc_kwargs}},
               tmp_path / "extractor.pt")
    vocab = Vocabulary.build(["a dog barks", "rain falls on a roof"])
    (tmp_path / "run" / "train").mkdir(parents=True)
    vocab.save(tmp_path / "run" / "vocab.json")  # the study's layout: <run>/vocab.json, <run>/train/best.pt
    ckpts = []
    for i, dec in enumerate(["transformer", "gru"]):
        kw = {**TINY, "decoder": dec, "vocab_size": len(vocab), "feature_dim": enc.embed_dim}
        p = tmp_path / "run" / "train" / f"m{i}.pt"
        save_torch({"model": build_captioner(**kw).state_dict(),
                    "model_config": {"builder": "aacnb.captioning:build_captioner", "kwargs": kw,
                                     "extractor": str(tmp_path / "extractor.pt")}}, p)
        ckpts.append(p)
    for name, f0 in (("a.wav", 300.0), ("b.flac", 1200.0)):
        _write_tone(tmp_path / name, f0)
    files = [str(tmp_path / "a.wav"), str(tmp_path / "b.flac")]
    # explicit --extractor, JSON output, through the `aacnb` router
    assert main(["caption", "--model", str(ckpts[0]), "--extractor", str(tmp_path / "extractor.pt"), *files,
                 "--json", "--max-len", "6", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in out] == files and all(isinstance(r["caption"], str) for r in out)
    # extractor found through model_config; two models decode as an ensemble, the same as the Python API
    assert cli_caption(["--model", str(ckpts[0]), "--model", str(ckpts[1]), *files, "--beam", "2",
                        "--max-len", "6", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    api = AudioCaptioner.from_checkpoints(ckpts, device="cpu", beam_size=2, max_len=6).caption_files(files)
    assert lines == [f"{r['file']}\t{r['caption']}" for r in api]
    # friendly failures
    assert cli_caption(["--model", str(tmp_path / "nope.pt"), *files]) == 2
    assert "not found" in capsys.readouterr().err
    save_torch({"model": build_captioner(**{**TINY, "vocab_size": len(vocab), "feature_dim": enc.embed_dim}).state_dict(),
                "model_config": {"builder": "aacnb.captioning:build_captioner",
                                 "kwargs": {**TINY, "vocab_size": len(vocab), "feature_dim": enc.embed_dim}}},
               tmp_path / "run" / "train" / "noext.pt")
    assert cli_caption(["--model", str(tmp_path / "run" / "train" / "noext.pt"), *files]) == 2
    assert "--extractor" in capsys.readouterr().err


@pytest.mark.parametrize("decoder", DECODERS)
def test_step_needs_the_same_number_of_hypotheses_per_clip(decoder):
    m = build_captioner(decoder, **TINY).eval()
    cache = m.init_cache(m.encode(torch.randn(2, 7, TINY["feature_dim"])))
    with pytest.raises(ValueError, match="5 hypotheses for 2 clips"):
        m.step(torch.ones(5, dtype=torch.long), cache)
