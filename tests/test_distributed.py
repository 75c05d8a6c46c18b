"""Training on 2 CPU processes (torchrun, gloo) against one process: InfoNCE over the gathered batch, one
retrieval fine-tuning epoch and one captioner XE epoch, a run SIGKILLed after a checkpoint and resumed.

The 2-process runs live in tests/ddp_worker.py. The epochs compare in float64 (after the CNN14's float32 log-mel
front end): in float32 the ranks' smaller batches round differently, by as much as one process does when its
batches merely hold the same items in another order, and Adam turns that rounding, in coordinates whose gradient
is (nearly) zero, into steps of up to the learning rate. In float64 the comparison measures the distribution alone.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import ddp_worker as w  # noqa: E402

from aacnb.checkpoints import load_checkpoint  # noqa: E402

pytestmark = [pytest.mark.slow,  # each torchrun start costs ~10 s on 2 cores: two processes import torch
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")]


def torchrun(*args, ok=True):
    "Run tests/ddp_worker.py ARGS in 2 processes; return the completed process."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(TESTS / "ddp_worker.py"), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if ok:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return p


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    "Everything the tests compare with one process, from one 2-process job."
    out = tmp_path_factory.mktemp("ddp")
    torchrun("reference", out)
    return out


def weights(path):
    return load_checkpoint(path)["model"]


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_infonce_over_the_gathered_batch_equals_one_process(ref, one_torch_thread):
    "2 ranks x B pairs: the loss and the (DDP-averaged) gradients of one process at 2B, also for uneven shards."
    for n in (6, 5):                                     # 3 + 3 and 3 + 2 pairs
        loss, grads = w.infonce_grads(n)
        for rank in (0, 1):
            got = torch.load(ref / f"infonce{n}_rank{rank}.pt", weights_only=True)
            torch.testing.assert_close(got["loss"], loss, rtol=0, atol=1e-5)
            assert got["grads"].keys() == grads.keys()
            for k in grads:
                torch.testing.assert_close(got["grads"][k], grads[k], rtol=0, atol=1e-5, msg=k)
    # the loss is the global batch's: each rank's own 3 pairs alone would give another loss
    sub_a, sub_t = w.infonce_inputs(6)
    assert abs(float(w.Projected()(sub_a[:3], sub_t[:3]).detach()) - float(loss)) > 1e-2


def test_one_epoch_on_two_processes_equals_one_process(ref, tmp_path, one_torch_thread):
    "A retrieval fine-tuning epoch (cnn14-tiny + bert-tiny) and a captioner XE epoch at a global batch of 4."
    w.epochs(tmp_path)
    for run, build in (("retrieval", w.biencoder), ("xe", w.captioner)):
        one, two = weights(tmp_path / run / "last.pt"), weights(ref / run / "last.pt")
        assert max_diff(one, build().state_dict()) > 1e-3, run        # the weights did move ...
        assert max_diff(one, two) < 1e-5, run                         # ... and alike on 2 processes
        assert load_checkpoint(ref / run / "last.pt")["world_size"] == 2
        rows = lambda d: [(r["step"], round(float(r["loss"]), 6)) for r in _csv(d / run / "log.csv")]
        assert rows(tmp_path) == rows(ref)                             # the same loss at every step


def test_scst_rewards_use_the_global_batch(ref, one_torch_thread):
    "Each rank scores its own clips, with the document frequencies of the whole batch (as one process has them)."
    one = w.scst_rewards()
    two = np.concatenate([torch.load(ref / f"scst_rewards_rank{r}.pt", weights_only=False) for r in (0, 1)])
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-9)
    assert not np.allclose(w.scst_rewards(rows=[0, 1, 2]), one[:3])   # a rank's own clips alone weigh otherwise
    rows = [r for r in _csv(ref / "scst" / "log.csv") if r["kind"] == "train"]
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"])) and 0 <= float(rows[0]["reward"]) < 10


def test_killed_run_resumes_under_torchrun(ref, tmp_path):
    "SIGKILL rank 0 at step 8 (last.pt is from step 6), resume on 2 processes: the uninterrupted 2-process run."
    p = torchrun("noisy", tmp_path, 8, ok=False)
    assert p.returncode != 0 and "SIGKILL" in p.stdout + p.stderr
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"], ck["world_size"]) == (1, 2, 6, 2)
    assert len(ck["rng_ranks"]) == 1                                   # rank 1's random streams too
    p = torchrun("noisy", tmp_path)
    assert "resuming" in p.stdout + p.stderr
    full = ref / "noisy"
    for name in ("last.pt", "best.pt"):
        a, b = weights(tmp_path / name), weights(full / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "log.csv").read_text() == (full / "log.csv").read_text()


def test_two_process_run_resumes_on_one_process(ref, tmp_path, one_torch_thread):
    "Killed on 2 processes, finished on 1: the same weights, average and log as the 2-process run."
    torchrun("linear", tmp_path, 8, ok=False)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6
    r = w.linear(tmp_path)
    assert r.resumed and r.steps == 15
    for name in ("last.pt", "best.pt", "swa.pt"):
        assert max_diff(weights(tmp_path / name), weights(ref / "linear" / name)) < 1e-6, name
    one = [float(r["loss"]) for r in _csv(tmp_path / "log.csv")]
    two = [float(r["loss"]) for r in _csv(ref / "linear" / "log.csv")]
    assert len(one) == len(two) and max(abs(a - b) for a, b in zip(one, two)) < 1e-5


def test_global_batches_the_ranks_cannot_share_are_refused(ref):
    for rank in (0, 1):
        said = json.loads((ref / f"refusals_rank{rank}.json").read_text())
        assert "batch_size=5 is the global batch and must be divisible by the 2 processes" in said["indivisible"]
        assert "holds 1 of the 41 items, fewer than the 2 processes" in said["short tail"]


def _csv(path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_study_training_run_on_two_processes(tmp_path, one_torch_thread):
    "train_run: a retrieval job's parameters go to torchrun as a spec, each process rebuilds the job, fit on 2."
    from aacnb import train_run
    from aacnb.synthetic import make_corpus
    from aacnb.train_config import TrainConfig
    root = make_corpus(tmp_path / "corpus", n_clips=12, n_audiocaps=0, n_macs=0, clip_seconds=(3.0, 3.0),
                       num_workers=1, progress=False)
    job = train_run.retrieval_job(str(root), "clotho", audio="cnn14-tiny", text="bert-tiny", embed_dim=16,
                                  overrides={"spec_augment": False}, eval_batch_size=8, max_seconds=3.0)
    cfg = TrainConfig(epochs=2, batch_size=6, lr=1e-3, seed=0, monitor="map10", progress=False, log_every=1)
    r = train_run.train(job, cfg, tmp_path / "two", nproc=2)
    spec = json.loads((tmp_path / "two" / "spec.json").read_text())
    assert spec["recipe"] == "retrieval" and spec["args"]["audio"] == "cnn14-tiny" and spec["config"]["batch_size"] == 6
    ck = load_checkpoint(r.last_path)
    assert ck["world_size"] == 2 and (r.epochs, r.steps) == (2, ck["step"]) and not r.resumed
    assert r.best_epoch in (1, 2) and r.best_value == max(h["val_map10"] for h in r.history if h["kind"] == "epoch")
    assert max_diff(job.model.state_dict(), ck["model"]) == 0              # the model holds the last weights
    one = train_run.train(train_run.retrieval_job(**spec["args"]), cfg, tmp_path / "one")   # the same job here
    assert one.steps == r.steps and [h["step"] for h in one.history] == [h["step"] for h in r.history]
    again = train_run.train(job, cfg, tmp_path / "two", nproc=2)             # finished: torchrun returns at once
    assert again.resumed and again.history == r.history
    with pytest.raises(RuntimeError, match=r"rank \d: ValueError: the last batch of each epoch holds 1 of the 45"):
        train_run.train(job, cfg.replace(batch_size=4), tmp_path / "tail", nproc=2)   # the rank's error comes first
