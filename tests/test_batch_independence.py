"""Issue #19, item 3: a clip's features, embedding and caption do not depend on what else is in its batch.

Each path a user meets is checked the same way: a short clip encoded alone, and in one batch with a clip
20 times longer (what a long recording in a folder or a command did to its neighbours), must agree to 1e-5.
Batches of equal-length clips (the tiny profile's) must still be computed exactly as PANNs' release does.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from aacnb.audio import SAMPLE_RATE, length_batches, load_audio
from aacnb.encoders import ENCODER_REVISION, build_audio_encoder

TOL = 1e-5
ENCODERS = ["cnn14-tiny", "wavegram-logmel-cnn14-tiny", "ast-tiny"]


def _noise(seconds, seed):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * SAMPLE_RATE))
                            .astype(np.float32))


def _write(path, seconds, seed, f0=None):
    x = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * SAMPLE_RATE)).astype(np.float32)
    if f0:
        x += 0.3 * np.sin(2 * np.pi * f0 * np.arange(len(x)) / SAMPLE_RATE).astype(np.float32)
    sf.write(path, x, SAMPLE_RATE)
    return path


def _padded(*clips):
    lengths = torch.tensor([len(c) for c in clips])
    return torch.stack([F.pad(c, (0, int(lengths.max()) - len(c))) for c in clips]), lengths


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("short_s", [1.0, 1.37])  # a length on the 10-ms grid and one off it
def test_encoder_outputs_of_a_clip_do_not_depend_on_a_20x_longer_batch_mate(name, short_s):
    torch.manual_seed(0)
    enc = build_audio_encoder(name).eval()
    short, long = _noise(short_s, 1), _noise(20 * short_s, 2)
    with torch.no_grad():
        alone = enc(short[None], torch.tensor([len(short)]))
        for batch, lengths, b in [(*_padded(short, long), 0), (*_padded(long, short), 1),
                                  (*_padded(short, long, short), 2)]:
            out = enc(batch, lengths)
            n = int(alone["frame_lengths"][0])
            assert int(out["frame_lengths"][b]) == n
            torch.testing.assert_close(out["clip"][b], alone["clip"][0], rtol=0, atol=TOL)
            torch.testing.assert_close(out["frames"][b, :n], alone["frames"][0, :n], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["cnn14-tiny", "wavegram-logmel-cnn14-tiny"])
def test_padding_is_ignored_even_when_it_is_not_zero(name):
    "The samples after a clip's length are not read: a caller's padding cannot leak in."
    enc = build_audio_encoder(name).eval()
    x = _noise(3.0, 3)[None].repeat(2, 1)
    lengths = torch.tensor([x.shape[1], 40000])
    with torch.no_grad():
        out = enc(x, lengths)
        alone = enc(x[1:, :40000])
    torch.testing.assert_close(out["clip"][1], alone["clip"][0], rtol=0, atol=TOL)


@pytest.mark.slow
def test_full_size_cnn14_layout_is_exact_under_padding():
    "The published layout (64 ... 2048 channels) on one short clip next to a 20x longer one."
    torch.manual_seed(0)
    enc = build_audio_encoder("cnn14").eval()
    short, long = _noise(0.5, 4), _noise(10.0, 5)
    with torch.no_grad():
        alone = enc(short[None])
        out = enc(*_padded(long, short))
    n = int(alone["frame_lengths"][0])
    assert int(out["frame_lengths"][1]) == n
    # clip vectors of the full network are larger (hundreds): compare relative to their scale
    scale = alone["clip"].abs().max().clamp(min=1.0)
    torch.testing.assert_close(out["clip"][1] / scale, alone["clip"][0] / scale, rtol=0, atol=TOL)
    torch.testing.assert_close(out["frames"][1, :n] / scale, alone["frames"][0] / scale, rtol=0, atol=TOL)


def _panns_release_forward(enc, x):
    "PANNs' own Cnn14.forward (eval), written out: what a batch without padding must compute, bit for bit."
    h = enc.logmel_extractor(enc.spectrogram_extractor(x))
    h = enc.bn0(h.transpose(1, 3)).transpose(1, 3)
    for i, block in enumerate([enc.conv_block1, enc.conv_block2, enc.conv_block3, enc.conv_block4,
                               enc.conv_block5, enc.conv_block6]):
        h = block(h, pool_size=(1, 1) if i == 5 else (2, 2), pool_type="avg")
    h = h.mean(dim=3)
    return F.relu_(enc.fc1(h.max(dim=2).values + h.mean(dim=2)))


def test_equal_length_batches_are_computed_exactly_as_before():
    torch.manual_seed(0)
    enc = build_audio_encoder("cnn14-tiny").eval()
    x = torch.stack([_noise(3.0, s) for s in range(3)])  # the tiny profile: every clip 3.0 s, no padding
    with torch.no_grad():
        ref = _panns_release_forward(enc, x)
        assert torch.equal(enc(x)["clip"], ref)
        assert torch.equal(enc(x, torch.full((3,), x.shape[1]))["clip"], ref)
    w = build_audio_encoder("wavegram-logmel-cnn14-tiny").eval()
    with torch.no_grad():
        assert torch.equal(w(x)["clip"], w(x, torch.full((3,), x.shape[1]))["clip"])
    # batching by length keeps equal-length clips in their order and their batches
    assert length_batches([96000] * 5, 2) == [[0, 1], [2, 3], [4]]


def test_a_ten_minute_file_does_not_pad_seven_short_ones():
    ten_min, short = 600 * SAMPLE_RATE, 10 * SAMPLE_RATE
    batches = length_batches([short, short, short, ten_min, short, short, short, short], 8)
    assert batches[0] == [3] and sorted(batches[1]) == [0, 1, 2, 4, 5, 6, 7]
    # a batch never pads more audio than batch_size clips of 30 s (Clotho's longest), unless one clip is longer
    lengths = [int(s * SAMPLE_RATE) for s in np.random.default_rng(0).uniform(1, 300, 200)]
    for b in length_batches(lengths, 8):
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 8 * 30 * SAMPLE_RATE


# -- the paths a user meets ------------------------------------------------------------------------------------

def _records(tmp_path, seconds):
    from aacnb.datasets import AudioCaptionRecord
    return [AudioCaptionRecord(f"c{k}.wav", _write(tmp_path / f"c{k}.wav", s, k, 300 + 200 * k),
                               [f"caption {k} one", f"caption {k} two"], "clotho", "test")
            for k, s in enumerate(seconds)]


def test_retrieval_embeddings_do_not_depend_on_the_batch(tmp_path):
    from aacnb.datasets import AudioCaptionDataset
    from aacnb.retrieval import build_biencoder, embed_clips
    torch.manual_seed(0)
    model = build_biencoder("cnn14-tiny", "bert-tiny", embed_dim=16).eval()
    recs = _records(tmp_path, [1.0, 20.0, 1.3, 0.9])
    a, t, t2a = embed_clips(model, AudioCaptionDataset(recs, mode="clips"), batch_size=4)
    assert t2a.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # dataset order, whatever the batching
    for k in (0, 2, 3):
        alone, t_alone, _ = embed_clips(model, AudioCaptionDataset([recs[k]], mode="clips"), batch_size=4)
        torch.testing.assert_close(a[k], alone[0], rtol=0, atol=TOL)
        torch.testing.assert_close(t[2 * k: 2 * k + 2], t_alone, rtol=0, atol=TOL)
    # the study's evaluation: the same scores with batch size 1 and 4
    from aacnb import study
    s1 = study.retrieval_eval(model, recs, batch_size=1, return_similarity=True)
    s4 = study.retrieval_eval(model, recs, batch_size=4, return_similarity=True)
    np.testing.assert_allclose(s1["similarity"], s4["similarity"], rtol=0, atol=TOL)
    np.testing.assert_allclose(s4["similarity"], (t @ a.T).numpy(), rtol=0, atol=TOL)


def test_extracted_features_do_not_depend_on_the_batch(tmp_path):
    "The study's features notebook: the frozen encoder's frames of each clip, through extract_features."
    from aacnb.features import extract_features
    torch.manual_seed(0)
    enc = build_audio_encoder("wavegram-logmel-cnn14-tiny").eval()

    def fn(waveforms, lengths):  # as nbs/experiments/features.ipynb
        with torch.no_grad():
            o = enc(waveforms, lengths)
        return [f[: int(n)].numpy() for f, n in zip(o["frames"], o["frame_lengths"])]

    files = [_write(tmp_path / f"f{k}.wav", s, k) for k, s in enumerate([1.2, 24.0, 0.7, 1.0])]
    items = [(p.name, p) for p in files]
    together = extract_features(items, fn, tmp_path / "all.h5", {"x": 1}, batch_size=4, progress=False)
    for k in (0, 2, 3):
        alone = extract_features(items[k:k + 1], fn, tmp_path / f"alone{k}.h5", {"x": 1}, progress=False)
        assert together[items[k][0]].shape == alone[items[k][0]].shape
        np.testing.assert_allclose(together[items[k][0]], alone[items[k][0]], rtol=0, atol=TOL)


def test_search_scores_do_not_depend_on_a_long_file_and_old_caches_are_not_reused(tmp_path):
    from aacnb.features import FeatureCache, extract_features
    from aacnb.retrieval import build_biencoder
    from aacnb.search import AudioSearcher, _file_id
    torch.manual_seed(0)
    model = build_biencoder("cnn14-tiny", "bert-tiny", embed_dim=16)
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir(), big.mkdir()
    for d in (small, big):
        for k, s in enumerate([1.0, 1.5, 0.8]):
            _write(d / f"s{k}.wav", s, k, 400 * (k + 1))
    _write(big / "long.wav", 30.0, 9)
    scores = {}
    for d in (small, big):
        s = AudioSearcher(model, cache_dir=tmp_path / f"cache_{d.name}", batch_size=8, device="cpu")
        s.index(d)
        scores[d.name] = {Path(r["path"]).name: r["score"] for r in s.search("a tone", top=10)}
        assert FeatureCache(s.cache_path).settings["encoder"] == ENCODER_REVISION
    for name in ("s0.wav", "s1.wav", "s2.wav"):
        assert abs(scores["small"][name] - scores["big"][name]) <= TOL
    # a cache written before the encoders were exact (no "encoder" in its settings) is never read again:
    # plant one where the old code kept it, with embeddings no model makes (zeros)
    s = AudioSearcher(model, cache_dir=tmp_path / "old", batch_size=8, device="cpu")
    old_settings = {"kind": "biencoder-audio-embedding", "model": s.model_key}
    tag = hashlib.sha1(json.dumps([old_settings, str(small.resolve()), None]).encode()).hexdigest()[:16]
    (tmp_path / "old").mkdir()
    extract_features([(_file_id(small, p), p) for p in sorted(small.glob("*.wav"))],
                     lambda w, n: [np.zeros(16, np.float32)] * len(n), tmp_path / "old" / f"search-{tag}.h5",
                     old_settings, progress=False)
    s.index(small)
    assert s.cache_path.name != f"search-{tag}.h5"
    assert torch.allclose(s.embeddings.norm(dim=1), torch.ones(3))  # freshly computed, unit-length embeddings


def _captioner(tmp_path, feature_dim, extractor=None):
    from aacnb.captioning import build_captioner
    from aacnb.core import save_torch
    from aacnb.text import Vocabulary
    vocab = Vocabulary.build(["a dog barks loudly", "rain falls on a tin roof", "a man speaks", "birds sing"])
    kw = dict(decoder="transformer", vocab_size=len(vocab), feature_dim=feature_dim, enc_hidden=8, d_model=16,
              nhead=2, dim_feedforward=32, dropout=0.0, enc_dropout=0.0)
    torch.manual_seed(1)
    path = tmp_path / f"cap{feature_dim}.pt"
    save_torch({"model": build_captioner(**kw).state_dict(),
                "model_config": {"builder": "aacnb.captioning:build_captioner", "kwargs": kw, "vocab": vocab.itos,
                                 "extractor": str(extractor) if extractor else None}}, path)
    return path


@pytest.mark.parametrize("features", ["log-mel", "cnn14-tiny"])
def test_captions_do_not_depend_on_a_long_file_in_the_same_command(tmp_path, features):
    import warnings
    from aacnb.caption import AudioCaptioner
    from aacnb.core import save_torch
    if features == "log-mel":
        ckpt, ext = _captioner(tmp_path, 64), None
    else:
        torch.manual_seed(0)
        enc = build_audio_encoder(features)
        ext = tmp_path / "extractor.pt"
        save_torch({"model": enc.state_dict(), "model_config": {"builder": "aacnb.encoders:Cnn14",
                                                               "kwargs": {"width": 1 / 16, "audioset_head": False}}}, ext)
        ckpt = _captioner(tmp_path, enc.embed_dim, ext)
    shorts = [_write(tmp_path / f"s{k}.wav", s, k, 250 * (k + 1)) for k, s in enumerate([1.0, 1.4, 0.8, 1.1])]
    long = _write(tmp_path / "long.wav", 22.0, 7, 500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no extractor fingerprint in these toy checkpoints
        cap = AudioCaptioner.from_checkpoints(ckpt, device="cpu", beam_size=2, max_len=8, batch_size=8)
    together = cap.caption_files([shorts[0], long, *shorts[1:]])
    alone = [cap.caption_files([s])[0] for s in shorts]
    assert [r["caption"] for r in together[:1] + together[2:]] == [r["caption"] for r in alone]
    # and the features the decoder reads: a short clip's, padded next to the long one, equal its own
    w = [load_audio(p) for p in (shorts[0], long)]
    f_both, n_both = cap.features(*_padded(*w))
    f_one, n_one = cap.features(*_padded(w[0]))
    assert int(n_both[0]) == int(n_one[0])
    torch.testing.assert_close(f_both[0, : int(n_one[0])], f_one[0, : int(n_one[0])], rtol=0, atol=TOL)


def test_caption_batches_group_files_of_similar_length(tmp_path, monkeypatch):
    from aacnb.caption import AudioCaptioner
    files = [_write(tmp_path / f"{k}.wav", s, k) for k, s in enumerate([1.0, 8.0, 1.0, 1.0, 8.0, 1.0])]
    cap = AudioCaptioner.from_checkpoints(_captioner(tmp_path, 64), device="cpu", beam_size=1, max_len=3,
                                          batch_size=2)
    widths, real = [], cap.caption_waveforms
    monkeypatch.setattr(cap, "caption_waveforms", lambda w, n: widths.append(w.shape[1] / SAMPLE_RATE) or real(w, n))
    res = cap.caption_files(files)
    assert [r["file"] for r in res] == [str(f) for f in files] and all("caption" in r for r in res)
    assert widths == [8.0, 1.0, 1.0]  # in file order it was [8, 8, 1]: two short files padded to 8 s
