"""What tests/test_distributed.py runs in each process under torchrun (and, for the references, in one process).

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py TASK OUT_DIR [KILL_AT]

Tasks: `reference` runs everything the tests compare with one process: the loss and gradients of a projection +
InfoNCE over the gathered batch, one retrieval fine-tuning epoch and one captioner XE epoch through `fit`, the
kill-and-resume run of test_training.py's NoisyMLP, a run with no randomness (`linear`), and the refusals of a
global batch the ranks cannot share. `noisy` and `linear` run one of those alone, SIGKILLed at step KILL_AT
when given.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aacnb.train_config import TrainConfig  # noqa: E402
from aacnb.training import fit  # noqa: E402

# --- InfoNCE over the gathered batch ------------------------------------------------------------------------


class Projected(torch.nn.Module):
    "A projection to the shared space + the report's InfoNCE (the bi-encoder's loss path without the encoders)."
    def __init__(self):
        super().__init__()
        from aacnb.retrieval import InfoNCELoss
        torch.manual_seed(0)
        self.audio, self.text, self.criterion = torch.nn.Linear(6, 5), torch.nn.Linear(7, 5), InfoNCELoss()

    def forward(self, a, t):
        return self.criterion(F.normalize(self.audio(a), dim=-1), F.normalize(self.text(t), dim=-1))[0]


def infonce_inputs(n):
    g = torch.Generator().manual_seed(n)
    return torch.randn(n, 6, generator=g), torch.randn(n, 7, generator=g)


def infonce_grads(n, world=None):
    "(loss, {parameter: gradient}) for a global batch of n pairs, on one process or (world) this rank's slice."
    from aacnb.distributed import shard
    model = Projected()
    a, t = infonce_inputs(n)
    if world is not None:
        rows = shard(list(range(n)), world)
        a, t = a[rows], t[rows]
        model = torch.nn.parallel.DistributedDataParallel(model)
    loss = model(a, t)
    loss.backward()
    inner = model.module if world is not None else model
    return loss.detach(), {k: p.grad.clone() for k, p in inner.named_parameters()}


# --- one epoch of each kind ---------------------------------------------------------------------------------

class Pairs(torch.utils.data.Dataset):
    "(clip, caption) pairs of random audio of different lengths."
    WORDS = ["dog", "rain", "car", "bird", "bell", "wind", "engine", "door"]

    def __init__(self, n=12):
        g = torch.Generator().manual_seed(1)
        self.audio = [0.1 * torch.randn(int(8000 + 800 * (i % 5)), generator=g, dtype=torch.float64) for i in range(n)]
        self.captions = [f"a {self.WORDS[i % 8]} and a {self.WORDS[(3 * i + 1) % 8]}" + " far away" * (i % 3)
                         for i in range(n)]

    def __len__(self):
        return len(self.audio)

    def __getitem__(self, i):
        return {"audio": self.audio[i], "caption": self.captions[i]}


def biencoder():
    """cnn14-tiny + bert-tiny with every source of per-rank difference off (dropout, SpecAugment, BatchNorm's batch
    statistics), in float64 after the (float32) log-mel front end: see test_distributed.py for why."""
    from aacnb.retrieval import build_biencoder
    torch.manual_seed(0)
    m = build_biencoder("cnn14-tiny", "bert-tiny", embed_dim=16, spec_augment=False, dropout=0.0, embed_dropout=0.0)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):  # per-rank batch statistics: use running ones
            mod.train = lambda mode=True, mod=mod: torch.nn.Module.train(mod, False)
            mod.eval()
    m.double()
    enc = m.audio_encoder
    enc.spectrogram_extractor.float(), enc.logmel_extractor.float()    # the front end computes in float32
    enc.bn0.forward = lambda x, bn=enc.bn0: type(bn).forward(bn, x.double())
    return m


TINY_CAPTIONER = dict(vocab_size=30, feature_dim=6, enc_hidden=8, d_model=16, nhead=2, dim_feedforward=32,
                      dropout=0.0, enc_dropout=0.0, tf_start=1.0, tf_end=1.0)


class Captions(torch.utils.data.Dataset):
    "Feature sequences of different lengths with captions of different lengths (the token mean matters)."
    def __init__(self, n=12):
        g = torch.Generator().manual_seed(2)
        self.f = [torch.randn(5 + i % 4, 6, generator=g, dtype=torch.float64) for i in range(n)]
        self.t = [torch.cat([torch.tensor([1]), torch.randint(4, 30, (2 + (5 * i) % 7,), generator=g),
                             torch.tensor([2])]) for i in range(n)]

    def __len__(self):
        return len(self.f)

    def __getitem__(self, i):
        return {"features": self.f[i], "tokens": self.t[i]}


def collate_captions(items):
    from aacnb.datasets import collate_audio
    out = collate_audio([{"features": it["features"]} for it in items])
    out["tokens"] = torch.nn.utils.rnn.pad_sequence([it["tokens"] for it in items], batch_first=True)
    return out


def captioner():
    from aacnb.captioning import build_captioner
    torch.manual_seed(0)
    return build_captioner("transformer", num_layers=2, **TINY_CAPTIONER).double()


def epochs(out: Path):
    "One retrieval fine-tuning epoch and one captioner XE epoch at a global batch of 4."
    from aacnb.datasets import collate_audio
    cfg = dict(epochs=1, batch_size=4, progress=False, log_every=1, seed=3, monitor="")
    fit(biencoder(), Pairs(), TrainConfig.retrieval_finetune(lr=1e-3, **cfg), out / "retrieval",
        collate_fn=collate_audio)
    fit(captioner(), Captions(), TrainConfig.captioning_xe(lr=3e-3, warmup_steps=1, **cfg), out / "xe",
        collate_fn=collate_captions)


# --- SCST ------------------------------------------------------------------------------------------------------

REFS = [["a dog barks", "a dog barks loudly", "the dog barks"], ["a car passes", "a car passes by", "the car passes"],
        ["a dog runs", "the dog runs fast", "a dog runs"], ["rain falls", "heavy rain falls", "the rain falls"],
        ["a car honks", "the car honks loudly", "a car honks"], ["a bell rings", "the bell rings", "a bell rings"]]


def scst_model():
    from aacnb.captioning import build_captioner
    from aacnb.scst import SCSTCaptioner, tiny_problem
    from aacnb.text import Vocabulary
    _, _, refs = tiny_problem()
    vocab = Vocabulary.build([r for rs in refs + REFS for r in rs])
    torch.manual_seed(0)
    model = build_captioner("gru", **{**TINY_CAPTIONER, "vocab_size": len(vocab), "feature_dim": 8})
    return SCSTCaptioner(model, vocab, max_len=6, num_samples=2)


def scst_rewards(world=None, rows=None):
    """Rewards of fixed captions for 6 clips (or `rows` of them; some share words, so the frequencies depend on which
    clips the batch holds) with the batch's document frequencies; on several ranks each scores its slice."""
    from aacnb.distributed import shard
    from aacnb.scst import normalize_references
    scst, refs = scst_model(), REFS
    caps = ["a dog barks", "a car", "the dog runs", "rain falls loudly", "a car honks", "the bell rings"]
    rows = rows or (shard(list(range(6)), world) if world is not None else list(range(6)))
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(scst.vocab.encode(caps[i], add_special=False)
                                                           + [scst.vocab.eos_id]) for i in rows], batch_first=True)
    local = normalize_references([refs[i] for i in rows])
    return scst.rewards(tokens, local, scst.batch_scorer(local, across_ranks=world is not None))


class Clips(torch.utils.data.Dataset):
    def __init__(self):
        from aacnb.scst import tiny_problem
        self.f, _, self.refs = tiny_problem()

    def __len__(self):
        return len(self.f)

    def __getitem__(self, i):
        return {"features": self.f[i], "captions": self.refs[i]}


def scst_epoch(out: Path):
    from aacnb.datasets import collate_audio
    cfg = TrainConfig.captioning_scst(epochs=1, batch_size=6, progress=False, log_every=1, seed=3, monitor="")
    return fit(scst_model(), Clips(), cfg, out / "scst", collate_fn=collate_audio)


# --- kill and resume ----------------------------------------------------------------------------------------

def kill_at(step):
    def on_step(state):
        if step is not None and state.step == step and int(os.environ.get("RANK", 0)) == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies without cleanup; torchrun stops the others
    return on_step


def noisy(out: Path, kill=None):
    import test_training as t
    torch.manual_seed(0)
    return fit(t.NoisyMLP(), t.PairData(), t.run_config(), out, val_fn=t.val_fn, on_step=kill_at(kill))


def linear(out: Path, kill=None):
    import test_training as t
    torch.manual_seed(0)
    cfg = t.run_config(max_grad_norm=0.0, swa_epochs=2)
    return fit(t.Linear(), t.PairData(), cfg, out, val_fn=t.val_fn, on_step=kill_at(kill))


def refusals(out: Path):
    "What fit says to a global batch the ranks cannot share (the messages, for the test to read)."
    import json
    import test_training as t
    said = {}
    for name, n, batch_size in (("indivisible", 40, 5), ("short tail", 41, 4)):
        try:
            fit(t.Linear(), t.PairData(n=n), t.run_config(batch_size=batch_size), out / name.replace(" ", "_"))
        except ValueError as e:
            said[name] = str(e)
    (out / f"refusals_rank{os.environ['RANK']}.json").write_text(json.dumps(said))


def main(argv):
    """`reference`: all the 2-process runs the tests compare with one process; `noisy` / `linear` [KILL_AT]:
    one run, killed at step KILL_AT when given."""
    from aacnb.distributed import init_world
    task, out = argv[0], Path(argv[1])
    kill = int(argv[2]) if len(argv) > 2 else None
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    world = init_world("cpu")
    if task == "reference":
        for n in (6, 5):                      # even shards (3 + 3) and uneven ones (3 + 2)
            loss, grads = infonce_grads(n, world)
            torch.save({"loss": loss, "grads": grads}, out / f"infonce{n}_rank{world.rank}.pt")
        epochs(out)
        torch.save(scst_rewards(world), out / f"scst_rewards_rank{world.rank}.pt")
        scst_epoch(out)
        noisy(out / "noisy")
        linear(out / "linear")
        refusals(out)
    elif task == "noisy":
        noisy(out, kill)
    elif task == "linear":
        linear(out, kill)
    else:
        raise SystemExit(f"unknown task {task!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
