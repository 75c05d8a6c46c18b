"""SCST: the self-critical step raises CIDEr-D on a toy problem, deterministically; checkpoints stay captioner-shaped."""
import numpy as np
import pytest
import torch

from aacnb.captioning import CaptionCollator, build_captioner
from aacnb.core import seed_everything
from aacnb.decoding import greedy_decode
from aacnb.scst import SCSTCaptioner, normalize_references, tiny_problem
from aacnb.text import Vocabulary

SMALL = dict(feature_dim=8, enc_hidden=16, d_model=32, nhead=2, dim_feedforward=64, gru_hidden=32, gru_emb_dim=16,
             attn_size=16, dropout=0.0, enc_dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(decoder, steps=40, seed=0, lr=1e-3, baseline="greedy"):
    feats, lens, refs = tiny_problem()
    vocab = Vocabulary.build([r for rs in refs for r in rs])
    seed_everything(seed)
    model = build_captioner(decoder, vocab_size=len(vocab), **SMALL)
    scst = SCSTCaptioner(model, vocab, references_corpus=refs, max_len=6, num_samples=8, baseline=baseline)

    def greedy():
        model.eval()
        caps = scst.texts(greedy_decode(model, feats, lens, 6, return_tensors=True))
        return scst.scorer.compute(caps, normalize_references(refs))[0]

    before, rewards = greedy(), []
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        model.train()
        out = scst.training_step({"features": feats, "feature_lengths": lens, "captions": refs})
        opt.zero_grad(); out["loss"].backward(); opt.step()
        rewards.append(out["reward"])
    return before, greedy(), rewards


def test_scst_raises_greedy_cider_and_is_deterministic():
    before, after, rewards = _run("transformer")
    assert after > before + 0.2
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10])   # the expected (sampled) reward rises too
    again = _run("transformer")
    assert again[1] == after and again[2] == rewards


def test_scst_raises_expected_reward_gru():
    _, _, rewards = _run("gru", steps=40)
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10])


def test_mean_of_other_samples_baseline():
    # Luo (2020): each sample against the mean reward of its clip's other samples; no greedy decoding
    before, after, rewards = _run("transformer", baseline="mean")
    assert after > before + 0.2 and np.mean(rewards[-10:]) > np.mean(rewards[:10])
    feats, lens, refs = tiny_problem()
    vocab = Vocabulary.build([r for rs in refs for r in rs])
    model = build_captioner("transformer", vocab_size=len(vocab), **SMALL)
    scst = SCSTCaptioner(model, vocab, references_corpus=refs, max_len=6, num_samples=4, baseline="mean")
    out = scst.training_step({"features": feats, "feature_lengths": lens, "captions": refs})
    assert "greedy_reward" not in out and abs(out["advantage"]) < 1e-6   # centred per clip
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        SCSTCaptioner(model, vocab, references_corpus=refs, baseline="mean")
    with pytest.raises(ValueError, match="baseline"):
        SCSTCaptioner(model, vocab, references_corpus=refs, num_samples=2, baseline="beam")


def test_samples_of_a_clip_share_one_encoding():
    feats, lens, refs = tiny_problem()
    vocab = Vocabulary.build([r for rs in refs for r in rs])
    model = build_captioner("gru", vocab_size=len(vocab), **SMALL)
    clips_encoded = []
    model.encoder.register_forward_hook(lambda mod, args, out: clips_encoded.append(args[0].shape[0]))
    scst = SCSTCaptioner(model, vocab, references_corpus=refs, max_len=6, num_samples=5)
    model.train()
    out = scst.training_step({"features": feats, "feature_lengths": lens, "captions": refs})
    out["loss"].backward()
    assert clips_encoded == [len(refs), len(refs)]     # the greedy baseline's (eval) and the samples' (train)


def test_advantage_sign_and_masking():
    feats, lens, refs = tiny_problem()
    vocab = Vocabulary.build([r for rs in refs for r in rs])
    seed_everything(1)
    model = build_captioner("transformer", vocab_size=len(vocab), **SMALL)
    scst = SCSTCaptioner(model, vocab, references_corpus=refs, max_len=6)
    out = scst.training_step({"features": feats, "feature_lengths": lens, "captions": refs})
    assert set(out) == {"loss", "reward", "greedy_reward", "advantage"}
    assert out["advantage"] == pytest.approx(out["reward"] - out["greedy_reward"])
    out["loss"].backward()
    with pytest.raises(KeyError, match="captions"):
        scst.training_step({"features": feats, "feature_lengths": lens})
    with pytest.raises(ValueError, match="vocab_size"):
        SCSTCaptioner(build_captioner("gru", vocab_size=len(vocab) + 1, **SMALL), vocab, references_corpus=refs)


def test_scst_through_fit_writes_captioner_checkpoints(tmp_path):
    from aacnb.checkpoints import build_from_checkpoint
    from aacnb.train_config import TrainConfig
    from aacnb.training import fit
    feats, lens, refs = tiny_problem()
    vocab = Vocabulary.build([r for rs in refs for r in rs])
    items = [{"audio_id": str(i), "features": feats[i], "captions": refs[i]} for i in range(len(refs))]
    kwargs = {"decoder": "transformer", "vocab_size": len(vocab), **SMALL}
    seed_everything(0)
    model = build_captioner(**kwargs)
    scst = SCSTCaptioner(model, vocab, references_corpus=refs, max_len=6, num_samples=2)
    cfg = TrainConfig.captioning_scst(epochs=2, batch_size=3, lr=1e-3, progress=False, device="cpu", monitor="",
                                      log_every=1)
    fit(scst, items, cfg, tmp_path, collate_fn=CaptionCollator(vocab),
        model_config={"builder": "aacnb.captioning:build_captioner", "kwargs": kwargs})
    log = (tmp_path / "log.csv").read_text()
    assert "reward" in log.splitlines()[0]
    rebuilt = build_from_checkpoint(tmp_path / "last.pt")
    model.eval()
    assert greedy_decode(rebuilt, feats, lens, 6) == greedy_decode(model, feats, lens, 6)


def test_batch_document_frequencies_are_the_authors_reward():
    # Without references_corpus the reward is the authors' compute_batch_score: pycocoevalcap's Cider over the
    # batch, document frequencies from the references of the batch's distinct clips (a clip twice in a batch of
    # (clip, caption) pairs counts once)
    from pycocoevalcap.cider.cider import Cider
    _, _, refs = tiny_problem()
    vocab = Vocabulary.build([r for rs in refs for r in rs])
    scst = SCSTCaptioner(build_captioner("gru", vocab_size=len(vocab), **SMALL), vocab, max_len=6)
    batch_refs = normalize_references([refs[0], refs[1], refs[2], refs[1]])            # clip 1 twice, as pairs may be
    caps = ["a dog barks", "a car passes loudly", "the bird", "a car"]
    tokens = torch.tensor([[*(vocab.encode(c, add_special=False)), vocab.eos_id] + [0] * (4 - len(c.split()))
                           for c in caps])
    got = scst.rewards(tokens, batch_refs)
    keys = {0: batch_refs[0], 1: batch_refs[1], 2: batch_refs[2]}
    for i, clip in enumerate([0, 1, 2, 1]):
        hyps = {k: [caps[i] if k == clip else caps[k]] for k in keys}
        _, per = Cider().compute_score(keys, hyps)
        assert got[i] == pytest.approx(per[clip], abs=1e-6), (i, got[i], per[clip])
    more = refs + [["a dog sings", "a dog sings loudly", "the dog sings"]]   # "dog" in two clips of the corpus
    corpus = SCSTCaptioner(build_captioner("gru", vocab_size=len(vocab), **SMALL), vocab, references_corpus=more,
                           max_len=6)
    assert not np.allclose(corpus.rewards(tokens, batch_refs), got)      # corpus frequencies weigh otherwise
