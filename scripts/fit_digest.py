"""Digests of what `aacnb.training.fit` writes for a few fixed-seed runs: run it before and after a change to the loop.

    python scripts/fit_digest.py          # one line per file: run/file  sha256 of its content

Identical lines before and after mean the change kept every weight, optimiser moment, RNG state, log row and
checkpoint field (and the order of the fields) bit for bit. A checkpoint is digested by content, key order
included, without its `provenance` (commit and time differ by construction); log.csv byte for byte.
The runs cover what the loop does: gradient accumulation with a short last group, clipping, warm-up + cosine,
mid-epoch checkpoints, model selection, stochastic weight averaging, an interruption and its resume, bf16 autocast.
"""
from __future__ import annotations

import hashlib
import math
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from aacnb.train_config import TrainConfig
from aacnb.training import fit


class Data(torch.utils.data.Dataset):
    def __init__(self, n=42, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Noisy(torch.nn.Module):
    "Dropout, NumPy and Python noise and the state: every random stream the loop saves and restores."
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                       torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def training_step(self, batch, state):
        noise = torch.from_numpy(np.random.randn(*batch["y"].shape).astype(np.float32)) * 0.01
        pred = self.net(batch["x"]) + noise + random.random() * 1e-3
        loss = torch.nn.functional.mse_loss(pred, batch["y"]) + 0.0 * self.logit_scale
        return {"loss": loss, "progress": torch.tensor(state.progress)}


def val_fn(model):
    d = Data(seed=1)
    return {"neg_loss": -float(torch.nn.functional.mse_loss(model.net(d.x), d.y))}


CONFIG = dict(epochs=4, batch_size=4, grad_accum=3, lr=3e-2, warmup_steps=3, schedule="cosine", final_lr=1e-3,
              log_every=2, checkpoint_every=3, max_grad_norm=1.0, seed=7, monitor="neg_loss", swa_epochs=2,
              progress=False)


class Stop(Exception):
    pass


def runs(root: Path) -> None:
    torch.manual_seed(0)
    fit(Noisy(), Data(), TrainConfig(**CONFIG), root / "full", val_fn=val_fn)

    def stop(state):
        if state.step == 10:
            raise Stop

    torch.manual_seed(0)
    try:
        fit(Noisy(), Data(), TrainConfig(**CONFIG), root / "resumed", val_fn=val_fn, on_step=stop)
    except Stop:
        pass
    fit(Noisy(), Data(), TrainConfig(**CONFIG), root / "resumed", val_fn=val_fn)
    torch.manual_seed(0)
    fit(Noisy(), Data(), TrainConfig(**{**CONFIG, "amp": "bf16", "swa_epochs": 0, "grad_accum": 1}), root / "bf16",
        val_fn=val_fn)


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{")
        for k, v in obj.items():
            h.update(repr(k).encode()); _feed(h, v)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.suffix == ".pt":
        ck = torch.load(path, map_location="cpu", weights_only=True)
        ck.pop("provenance", None)
        _feed(h, ck)
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        runs(root)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                print(f"{path.relative_to(root).as_posix():<22} {digest(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
