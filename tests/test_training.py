"Tests of aacnb.training: schedules, the loop, determinism, kill-and-resume, init_from, accumulation, selection."
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aacnb.checkpoints import build_from_checkpoint, load_checkpoint
from aacnb.core import ConfigError
from aacnb.train_config import TrainConfig, make_scheduler, warmup_steps_for
from aacnb.training import fit

TESTS = Path(__file__).parent


# --- fixtures in the loop's two model styles ---------------------------------------------------------------

class PairData(torch.utils.data.Dataset):
    "40 items of dicts with a tensor pair and a string (strings must survive collation and to_device)."
    def __init__(self, n=40, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "id": f"clip{i}"}


class NoisyMLP(torch.nn.Module):
    "Uses all three RNGs (torch dropout, numpy and python noise) and the state, as SCST/scheduled sampling do."
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(16, 1))
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def training_step(self, batch, state):
        assert isinstance(batch["id"], list) and 0.0 <= state.progress <= 1.0
        noise = torch.from_numpy(np.random.randn(*batch["y"].shape).astype(np.float32)) * 0.01
        pred = self.net(batch["x"]) + noise + random.random() * 1e-3
        loss = torch.nn.functional.mse_loss(pred, batch["y"]) + 0.0 * self.logit_scale
        return {"loss": loss, "progress": torch.tensor(state.progress)}


class Linear(torch.nn.Module):
    "`forward(batch) -> {'loss'}` style (the bi-encoder's)."
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, batch):
        return {"loss": torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])}


def run_config(**kw):
    base = dict(epochs=3, batch_size=4, grad_accum=2, lr=3e-2, warmup_steps=3, schedule="cosine",
                final_lr=1e-3, log_every=2, checkpoint_every=3, max_grad_norm=1.0, seed=7, monitor="neg_loss",
                progress=False)
    return TrainConfig(**{**base, **kw})


def val_fn(model):
    d = PairData(seed=1)
    pred = model.net(d.x) if hasattr(model, "net") else model.lin(d.x)
    return {"neg_loss": -float(torch.nn.functional.mse_loss(pred, d.y))}


def run_noisy(out_dir, kill_at=None):
    "The run the kill-and-resume test repeats (also executed in a subprocess, see below)."
    torch.manual_seed(0)

    def on_step(state):
        if kill_at is not None and state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as if the machine died

    return fit(NoisyMLP(), PairData(), run_config(), out_dir, val_fn=val_fn, on_step=on_step)


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- the schedule ------------------------------------------------------------------------------------------

def lrs(config, total, per_epoch):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched, out = make_scheduler(opt, config, total, per_epoch), []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradient: nothing moves, but the scheduler sees a step
        sched.step()
    return out


def test_scheduler_values():
    # retrieval: warm-up over the first epoch (10 steps), cosine to 0 at the last step
    c = TrainConfig.retrieval_pretrain()
    assert warmup_steps_for(c, 10) == 10
    v = lrs(c, 200, 10)
    assert v[0] == pytest.approx(1e-5) and v[9] == pytest.approx(1e-4) and v[10] == pytest.approx(1e-4)
    assert v[-1] == pytest.approx(0.0, abs=1e-15)
    assert all(a >= b for a, b in zip(v[10:], v[11:]))  # monotone decay
    # captioning XE: 3000 warm-up steps to 5e-4, exponential to 5e-7 at the end
    v = lrs(TrainConfig.captioning_xe(), 4000, 240)
    assert v[0] == pytest.approx(5e-4 / 3000) and v[2999] == pytest.approx(5e-4) and v[-1] == pytest.approx(5e-7)
    ratios = np.array(v[3001:]) / np.array(v[3000:-1])
    assert np.allclose(ratios, ratios[0])  # a constant factor per step
    # SCST: constant; fine-tuning: the same shape at 2e-5
    assert set(lrs(TrainConfig.captioning_scst(), 7, 7)) == {5e-5}
    assert max(lrs(TrainConfig.retrieval_finetune(), 50, 5)) == pytest.approx(2e-5)
    # a run shorter than its warm-up reaches the peak on its last step
    v = lrs(TrainConfig(warmup_steps=100, schedule="constant"), 10, 5)
    assert v[-1] == pytest.approx(1e-4)


def test_config_validation():
    with pytest.raises(ConfigError, match="TrainConfig.schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(warmup_steps=1, warmup_epochs=1.0)
    with pytest.raises(ConfigError, match="grad_accum"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ConfigError, match="final_lr"):
        TrainConfig(lr=1e-4, final_lr=1e-3)
    with pytest.raises(ConfigError, match="batchsize"):
        TrainConfig.from_dict({"batchsize": 3})
    assert TrainConfig.from_dict({"lr": 1, "amp": True}).amp == "auto"
    c = TrainConfig.captioning_xe(epochs=2)
    assert (c.epochs, c.batch_size, c.warmup_steps, c.schedule) == (2, 64, 3000, "exponential")


# --- the loop ----------------------------------------------------------------------------------------------

def test_loss_falls_and_files(tmp_path):
    torch.manual_seed(0)
    r = fit(Linear(), PairData(), run_config(epochs=8, grad_accum=1, checkpoint_every=0, lr=0.2, max_grad_norm=0.0),
            tmp_path, val_fn=val_fn)
    ep = [h["loss"] for h in r.history if h["kind"] == "epoch"]
    assert ep[-1] < 0.1 * ep[0], ep
    assert (r.epochs, r.steps) == (8, 80)
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "best.pt", "log.csv"}
    ck = load_checkpoint(r.last_path)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "batch_in_epoch", "step", "best",
                "config", "provenance"):
        assert key in ck, key
    assert ck["config"]["lr"] == 0.2 and ck["provenance"]["seed"] == 7
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "step", "kind", "loss", "lr", "val_neg_loss"]  # no temperature: Linear has none


def test_deterministic_on_cpu(tmp_path):
    r1 = run_noisy(tmp_path / "a")
    r2 = run_noisy(tmp_path / "b")
    assert (tmp_path / "a" / "log.csv").read_text() == (tmp_path / "b" / "log.csv").read_text()
    assert_same_weights(weights(r1.last_path), weights(r2.last_path))
    # the temperature of a CLIP-style logit_scale is logged; extra scalars are averaged and logged
    assert r1.history[0]["temperature"] == pytest.approx(0.07, rel=1e-3) and "progress" in r1.history[0]
    torch.manual_seed(0)
    r3 = fit(NoisyMLP(), PairData(), run_config(seed=8), tmp_path / "c", val_fn=val_fn)
    assert r3.history[0]["loss"] != r1.history[0]["loss"]


@pytest.mark.slow  # ~4 s, most of it the subprocess importing torch
def test_kill_and_resume_matches_uninterrupted(tmp_path):
    "SIGKILL a run at step 8 (last.pt is from step 6, mid-epoch 2), resume it, compare with an uninterrupted run."
    killed = tmp_path / "killed"
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_training as t; "
            f"t.run_noisy({str(killed)!r}, kill_at=8)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    ck = load_checkpoint(killed / "last.pt")
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (1, 2, 6)  # 10 micro-batches, 5 steps per epoch
    assert any(h["step"] == 8 for h in _csv_steps(killed / "log.csv"))  # rows past the checkpoint were logged

    resumed = run_noisy(killed)
    full = run_noisy(tmp_path / "full")
    assert resumed.resumed and not full.resumed
    assert (resumed.steps, resumed.epochs) == (full.steps, full.epochs) == (15, 3)
    assert_same_weights(weights(resumed.last_path), weights(full.last_path))
    assert_same_weights(weights(resumed.best_path), weights(full.best_path))
    assert (killed / "log.csv").read_text() == (tmp_path / "full" / "log.csv").read_text()
    assert (resumed.best_epoch, resumed.best_value) == (full.best_epoch, full.best_value)
    a, b = load_checkpoint(resumed.last_path), load_checkpoint(full.last_path)
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])


def test_interrupt_at_epoch_end_resumes_exactly(tmp_path):
    "An exception at step 10 (the last step of epoch 2, before its validation) resumes from step 9 exactly."
    class Stop(Exception):
        pass

    def stop(state):
        if state.step == 10:
            raise Stop

    torch.manual_seed(0)
    with pytest.raises(Stop):
        fit(NoisyMLP(), PairData(), run_config(), tmp_path / "a", val_fn=val_fn, on_step=stop)
    assert load_checkpoint(tmp_path / "a" / "last.pt")["step"] == 9
    random.random(); np.random.rand(); torch.rand(3)  # the resumed process's RNGs are elsewhere: no matter
    resumed = run_noisy(tmp_path / "a")
    full = run_noisy(tmp_path / "b")
    assert_same_weights(weights(resumed.last_path), weights(full.last_path))
    assert (tmp_path / "a" / "log.csv").read_text() == (tmp_path / "b" / "log.csv").read_text()


def test_finished_run_returns_and_config_change_refused(tmp_path):
    r = run_noisy(tmp_path)
    again = run_noisy(tmp_path)
    assert again.resumed and again.steps == r.steps and again.history == r.history
    with pytest.raises(ValueError, match="lr: 0.03 -> 0.1"):
        fit(NoisyMLP(), PairData(), run_config(lr=0.1), tmp_path)
    with pytest.raises(ValueError, match="written for 40 training items"):
        fit(NoisyMLP(), PairData(n=44), run_config(), tmp_path)
    # fields that do not change the result may differ
    fit(NoisyMLP(), PairData(), run_config(checkpoint_every=0, progress=True), tmp_path)


def test_corrupted_checkpoint_names_the_file(tmp_path):
    r = run_noisy(tmp_path / "run")
    data = r.last_path.read_bytes()
    r.last_path.write_bytes(data[: len(data) // 2])  # a truncated file
    with pytest.raises(RuntimeError, match=r"last\.pt cannot be read"):
        run_noisy(tmp_path / "run")
    r.last_path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RuntimeError, match=r"last\.pt cannot be read"):
        fit(NoisyMLP(), PairData(), run_config(), tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


class Recorder(NoisyMLP):
    "Keeps the weights it had at its first training step."
    def training_step(self, batch, state):
        if not hasattr(self, "start"):
            self.start = {k: v.detach().clone() for k, v in self.state_dict().items()}
        return super().training_step(batch, state)


def test_init_from_starts_from_weights_with_fresh_optimizer(tmp_path):
    pre = run_noisy(tmp_path / "pre")
    torch.manual_seed(123)  # a differently initialised model
    m = Recorder()
    ft = fit(m, PairData(seed=3), run_config(epochs=1, lr=1e-3), tmp_path / "ft", init_from=pre.last_path)
    assert_same_weights(m.start, weights(pre.last_path))
    ck = load_checkpoint(ft.last_path)
    assert ft.steps == 5 and all(int(s["step"]) == 5 for s in ck["optimizer"]["state"].values())  # fresh Adam
    assert ck["scheduler"]["last_epoch"] == 5
    # re-running the fine-tune resumes its own run, it does not start again from the pre-trained weights
    again = fit(Recorder(), PairData(seed=3), run_config(epochs=1, lr=1e-3), tmp_path / "ft",
                init_from=pre.last_path)
    assert again.resumed and again.steps == 5
    with pytest.raises(RuntimeError, match="do not fit"):
        fit(Linear(), PairData(), run_config(), tmp_path / "bad", init_from=pre.last_path)


def test_grad_accumulation_matches_bigger_batch(tmp_path):
    "accum 2 x batch 4 == batch 8 for a mean loss (same shuffle: the permutation does not depend on batch size)."
    kw = dict(epochs=3, lr=1e-2, max_grad_norm=0.0, checkpoint_every=0, monitor="", warmup_steps=2)
    torch.manual_seed(0)
    a = fit(Linear(), PairData(), run_config(batch_size=4, grad_accum=2, **kw), tmp_path / "a")
    torch.manual_seed(0)
    b = fit(Linear(), PairData(), run_config(batch_size=8, grad_accum=1, **kw), tmp_path / "b")
    assert a.steps == b.steps == 15
    wa, wb = weights(a.last_path), weights(b.last_path)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), (k, wa[k], wb[k])
    la = [h["loss"] for h in a.history if h["kind"] == "epoch"]
    lb = [h["loss"] for h in b.history if h["kind"] == "epoch"]
    assert np.allclose(la, lb, rtol=1e-4)
    # a short last group (40 items, batch 4, accum 3: groups of 3, 3, 3, 1 micro-batches) still steps
    torch.manual_seed(0)
    c = fit(Linear(), PairData(), run_config(batch_size=4, grad_accum=3, **kw), tmp_path / "c")
    assert c.steps == 3 * 4


def test_val_fn_selects_best(tmp_path):
    scores = iter([0.2, 0.9, 0.4, 0.1])
    cfg = run_config(epochs=4, monitor="map10", checkpoint_every=0)
    r = fit(Linear(), PairData(), cfg, tmp_path / "max", val_fn=lambda m: {"map10": next(scores), "r1": 0.0})
    assert (r.best_epoch, r.best_value) == (2, 0.9)
    best = load_checkpoint(r.best_path)
    assert best["epoch"] == 2 and best["metrics"]["map10"] == 0.9 and "optimizer" not in best
    assert load_checkpoint(r.last_path)["best"] == {"value": 0.9, "epoch": 2}
    losses = iter([3.0, 2.0, 2.5])
    r = fit(Linear(), PairData(), cfg.replace(epochs=3, monitor="loss", monitor_mode="min"), tmp_path / "min",
            val_fn=lambda m: {"loss": next(losses)})
    assert (r.best_epoch, r.best_value) == (2, 2.0)
    with pytest.raises(KeyError, match="cider_d"):
        fit(Linear(), PairData(), cfg.replace(monitor="cider_d"), tmp_path / "k", val_fn=lambda m: {"map10": 1.0})
    # without val_fn, best.pt is the last epoch
    r = fit(Linear(), PairData(), cfg.replace(epochs=2), tmp_path / "none")
    assert r.best_epoch == 2 and load_checkpoint(r.best_path)["epoch"] == 2


def test_build_from_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "mybuilder.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self, hidden):\n"
        "        super().__init__(); self.a = torch.nn.Linear(4, hidden); self.b = torch.nn.Linear(hidden, 1)\n"
        "    def forward(self, batch):\n"
        "        return torch.nn.functional.mse_loss(self.b(self.a(batch['x'])), batch['y'])\n"
        "def build(hidden=3):\n"
        "    return M(hidden)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import mybuilder
    model = mybuilder.build(hidden=5)
    mc = {"builder": "mybuilder:build", "kwargs": {"hidden": 5}}
    r = fit(model, PairData(), run_config(epochs=1, monitor=""), tmp_path / "run", model_config=mc)
    # a builder the package does not know is refused until the caller registers it (the file cannot choose code)
    with pytest.raises(ValueError, match="'mybuilder:build' is not a registered model builder"):
        build_from_checkpoint(r.last_path)
    import aacnb.checkpoints
    monkeypatch.setitem(aacnb.checkpoints.BUILDERS, "mybuilder:build", None)  # undone after the test
    aacnb.checkpoints.register_builder("mybuilder:build", mybuilder.build)
    for path in (r.last_path, r.best_path):
        rebuilt = build_from_checkpoint(path)
        assert not rebuilt.training
        assert_same_weights(rebuilt.state_dict(), model.state_dict())
    assert load_checkpoint(r.best_path)["model_config"] == mc
    r2 = fit(mybuilder.build(), PairData(), run_config(epochs=1, monitor=""), tmp_path / "run2")
    with pytest.raises(ValueError, match="no model_config"):
        build_from_checkpoint(r2.last_path)


def test_precision_settings_on_cpu(tmp_path):
    torch.manual_seed(0)
    r = fit(Linear(), PairData(), run_config(amp="bf16", epochs=2, checkpoint_every=0, monitor=""), tmp_path / "bf")
    assert all(math.isfinite(h["loss"]) for h in r.history)
    with pytest.raises(ValueError, match="needs CUDA"):
        fit(Linear(), PairData(), run_config(amp="fp16"), tmp_path / "fp16")


def test_bad_model_output_and_nan(tmp_path):
    class NoLoss(Linear):
        def forward(self, batch):
            return {"logits": self.lin(batch["x"])}

    with pytest.raises(TypeError, match="dict with 'loss'"):
        fit(NoLoss(), PairData(), run_config(), tmp_path / "a")

    class NaN(Linear):
        def forward(self, batch):
            return self.lin(batch["x"]).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="nan"):
        fit(NaN(), PairData(), run_config(), tmp_path / "b")


def test_small_pieces(tmp_path):
    from collections import namedtuple

    from aacnb.training import to_device
    P = namedtuple("P", "x y")
    b = to_device(P(torch.ones(1), "s"), torch.device("cpu"))
    assert isinstance(b, P) and b.y == "s"

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"x": torch.ones(4), "y": torch.ones(1)}

    with pytest.raises(TypeError, match="map-style"):
        fit(Linear(), Stream(), run_config(), tmp_path / "s")
    # a NaN first validation does not lock model selection; None metrics (SPICE absent) are skipped
    scores = iter([float("nan"), 0.3, 0.2])
    r = fit(Linear(), PairData(), run_config(monitor="map10"), tmp_path / "n",
            val_fn=lambda m: {"map10": next(scores), "spice": None})
    assert (r.best_epoch, r.best_value) == (2, 0.3)
    assert "val_spice" not in r.history[-1]
    with pytest.raises(ValueError, match="no training batches"):
        fit(Linear(), PairData(n=3), run_config(drop_last=True), tmp_path / "e")


def _csv_steps(path):
    import csv
    with open(path) as f:
        return [{"step": int(r["step"])} for r in csv.DictReader(f)]


# --- stochastic weight averaging ----------------------------------------------------------------------------

def test_swa_is_the_mean_of_the_last_epochs_and_survives_an_interruption(tmp_path):
    "swa.pt = mean of the weights at the end of the last `swa_epochs` epochs, also when the run was interrupted."
    class Stop(Exception):
        pass

    cfg = run_config(swa_epochs=2)                      # 3 epochs of 5 steps: epochs 2 and 3 are averaged
    ends = []

    def keep_ends(model):
        def on_step(state):
            if state.step % 5 == 0:
                ends.append({k: v.clone() for k, v in model.state_dict().items()})
        return on_step

    torch.manual_seed(0)
    m = NoisyMLP()
    full = fit(m, PairData(), cfg, tmp_path / "full", val_fn=val_fn, on_step=keep_ends(m))
    assert len(ends) == 3 and full.swa_path == tmp_path / "full" / "swa.pt"
    ck = load_checkpoint(full.swa_path)
    assert ck["epochs_averaged"] == 2 and ck["metrics"]["neg_loss"] < 0
    for k, v in ck["model"].items():
        torch.testing.assert_close(v, (ends[1][k] + ends[2][k]) / 2, rtol=0, atol=1e-6)
    assert_same_weights(m.state_dict(), weights(full.last_path))       # the model keeps its last weights

    def stop(state):                                    # mid-epoch 3: epoch 2 is in the average, last.pt at 12
        if state.step == 13:
            raise Stop

    torch.manual_seed(0)
    with pytest.raises(Stop):
        fit(NoisyMLP(), PairData(), cfg, tmp_path / "cut", val_fn=val_fn, on_step=stop)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["swa"]["n"] == 1
    resumed = fit(NoisyMLP(), PairData(), cfg, tmp_path / "cut", val_fn=val_fn)
    assert resumed.resumed
    assert_same_weights(weights(resumed.swa_path), weights(full.swa_path))


def test_resume_accepts_checkpoints_from_before_a_new_config_field(tmp_path):
    "A last.pt written before `swa_epochs` existed resumes (a missing field means its default)."
    torch.manual_seed(0)
    r = fit(Linear(), PairData(), run_config(epochs=2), tmp_path)
    ck = load_checkpoint(r.last_path)
    del ck["config"]["swa_epochs"]
    torch.save(ck, r.last_path)
    assert fit(Linear(), PairData(), run_config(epochs=2), tmp_path).resumed
    with pytest.raises(ValueError, match="swa_epochs: 0 -> 2"):
        fit(Linear(), PairData(), run_config(epochs=2, swa_epochs=2), tmp_path)
