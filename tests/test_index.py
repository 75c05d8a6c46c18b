"""Issue #16: `aacnb index` writes an index of a folder's audio embeddings that survives kill -9 and is updated
incrementally; `aacnb search --index` ranks from it; FAISS (optional) agrees with exact search.

The index is built by the command as a user runs it, in its own process: tests/kill_hook/sitecustomize.py
(AACNB_KILL_AT=chunk:<n>) kills it with SIGKILL right after its n-th chunk of embeddings is saved.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb.inference import embed_audio_files, embed_texts
from aacnb.pretrained import save_pretrained
from aacnb.retrieval import build_biencoder
from aacnb.search import cli_search
from aacnb.search_index import (AudioIndex, AudioIndexError, build_index, cli_index, read_npz, top_k,
                                top_k_exact, top_k_faiss)

torch.set_num_threads(1)
HOOK = Path(__file__).parent / "kill_hook"
ROOT = Path(__file__).parents[1]


def _model(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_pretrained(build_biencoder("cnn14-tiny", "bert-tiny", embed_dim=16).eval(), folder)
    return folder


def _wav(path: Path, seed: int, seconds: float = 0.5):
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, 16000)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("m") / "ret", 0)


def _folder(d: Path, n: int) -> Path:
    for i in range(n):
        _wav(d / f"sub{i % 3}" / f"clip{i:03d}.wav", i)
    return d


def _index_process(folder, model, out, *extra, env=None):
    "`aacnb index` in a process of its own, as a user runs it."
    cmd = [sys.executable, "-c", "import sys; from aacnb.cli import main; sys.exit(main())", "index", str(folder),
           "--model", str(model), "--out", str(out), "--chunk-size", "20", "--json", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT)] + (
        [str(HOOK)] if env else [])), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _same_index(a: Path, b: Path):
    (ma, ea), (mb, eb) = read_npz(a), read_npz(b)
    assert ma["files"] == mb["files"] and ma["failed"] == mb["failed"] and ma["model_sha256"] == mb["model_sha256"]
    np.testing.assert_allclose(ea, eb, atol=1e-6)


def test_kill_9_then_rerun_equals_a_clean_run_and_a_rerun_embeds_only_what_changed(tmp_path, model, capsys):
    folder = _folder(tmp_path / "sounds", 200)
    clean = build_index(folder, model, tmp_path / "clean.npz", chunk_size=20)
    assert clean["embedded"] == clean["indexed"] == 200 and clean["failed"] == {}
    out, log = tmp_path / "idx.npz", tmp_path / "kills.log"
    killed = _index_process(folder, model, out, env={"AACNB_KILL_AT": "chunk:3", "AACNB_KILL_LOG": str(log)})
    assert killed.returncode == -9 and "chunk" in log.read_text(), killed.stderr
    assert not out.exists() and len(list((tmp_path / "idx.npz.partial").glob("chunk-*.npz"))) == 3
    resumed = _index_process(folder, model, out)
    report = json.loads(resumed.stdout)
    assert resumed.returncode == 0 and (report["embedded"], report["reused"]) == (140, 60), resumed.stderr
    _same_index(out, tmp_path / "clean.npz")
    assert not (tmp_path / "idx.npz.partial").exists()

    # touch two files, rewrite a third, remove a fourth: exactly the three are embedded again
    before = AudioIndex(out)
    changed = [folder / "sub0/clip000.wav", folder / "sub1/clip100.wav", folder / "sub1/clip199.wav"]
    assert all(p.is_file() for p in changed)
    for p in changed[:2]:
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    sf.write(changed[2], 0.5 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000).astype(np.float32), 16000)
    (folder / "sub1/clip004.wav").unlink()
    capsys.readouterr()
    assert cli_index([str(folder), "--model", str(model), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["embedded"], report["reused"], report["removed"], report["indexed"]) == (3, 196, 1, 199)
    after = AudioIndex(out)
    report = build_index(folder, model, out)  # and a run with nothing to do embeds nothing
    assert (report["embedded"], report["reused"], report["removed"]) == (0, 199, 0)
    rows = {p: e for p, e in zip(after.paths, after.embeddings)}
    assert len(after) == 199 and folder / "sub1/clip004.wav" not in rows
    old = dict(zip(before.paths, before.embeddings))
    np.testing.assert_allclose(rows[changed[0]], old[changed[0]], atol=1e-6)  # touched: same audio, same embedding
    fresh = embed_audio_files(str(model), [changed[2]], progress=False)[0].numpy()  # rewritten: its new embedding
    np.testing.assert_allclose(rows[changed[2]], fresh / np.linalg.norm(fresh), atol=1e-5)
    assert not np.allclose(rows[changed[2]], old[changed[2]], atol=1e-3)


def test_the_report_counts_the_re_embedded_files(tmp_path, model, capsys):
    folder = _folder(tmp_path / "sounds", 8)
    assert cli_index([str(folder), "--model", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == 8 and (folder / ".aacnb-index.npz").is_file()
    for p in sorted(folder.rglob("*.wav"))[:3]:
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    (folder / "new.wav").write_bytes(b"not audio")  # an unreadable file is reported, and not tried again unchanged
    assert cli_index([str(folder), "--model", str(model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["embedded"], report["reused"], report["indexed"]) == (4, 5, 8) and list(report["failed"]) == ["new.wav"]
    assert cli_index([str(folder), "--model", str(model)]) == 0
    assert "(0 embedded, 9 unchanged, 0 removed)" in capsys.readouterr().out


def test_a_chunk_cut_short_is_ignored_and_another_model_is_refused(tmp_path, model, capsys):
    folder = _folder(tmp_path / "sounds", 6)
    part = tmp_path / "i.npz.partial"
    part.mkdir()
    (part / "chunk-000001.npz").write_bytes(b"PK\x03\x04 cut short")
    report = build_index(folder, model, tmp_path / "i.npz")
    assert report["embedded"] == 6 and not part.exists()
    other = _model(tmp_path / "other", 1)
    with pytest.raises(AudioIndexError, match="i.npz is an index that was made with another model"):
        build_index(folder, other, tmp_path / "i.npz")
    assert cli_search(["--index", str(tmp_path / "i.npz"), "--model", str(other), "x", "--device", "cpu"]) == 1
    assert "another model" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    assert cli_search(["--index", str(tmp_path / "bad.npz"), "x"]) == 1
    assert "bad.npz is not a readable aacnb index" in capsys.readouterr().err


def test_search_index_ranks_by_cosine_as_the_model_does(tmp_path, model, capsys):
    folder = _folder(tmp_path / "sounds", 12)
    build_index(folder, model)  # into the folder's default index file
    assert cli_search(["--index", str(folder / ".aacnb-index.npz"), "a dog barks", "--top", "5", "--json",
                       "--device", "cpu"]) == 0
    hits = json.loads(capsys.readouterr().out)
    files = sorted(folder.rglob("*.wav"))
    audio = embed_audio_files(str(model), files, progress=False)                              # (12, 16)
    text = torch.nn.functional.normalize(embed_texts(str(model), ["a dog barks"], progress=False), dim=-1)
    want = (audio @ text[0]).numpy()
    order = np.argsort(-want, kind="stable")[:5]
    assert [h["path"] for h in hits] == [str(files[i]) for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], want[order], atol=1e-5)
    assert cli_search(["--index", str(folder), "--query", "rain", "--query", "wind", "--top", "2",
                       "--device", "cpu"]) == 0  # the folder stands for its default index file
    out = capsys.readouterr().out
    assert "query: 'rain'  (12 files; 2 queries embedded in" in out and "query: 'wind'" in out


def test_faiss_top_10_equals_exact_search_on_100000_vectors():
    pytest.importorskip("faiss", reason="faiss-cpu is the optional extra aacnb[faiss]")
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((100_000, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = rng.standard_normal((20, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact_scores, exact_rows = top_k_exact(emb, q, 10)
    scores, rows, method = top_k(emb, q, 10)
    assert method == "faiss" and (rows == exact_rows).all()
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    assert (top_k_faiss(emb[:5], q, 10)[1] == top_k_exact(emb[:5], q, 10)[1]).all()  # fewer vectors than k


def test_without_faiss_a_large_index_is_searched_exactly(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    emb = np.eye(8, dtype=np.float32)
    scores, rows, method = top_k(emb, emb[[3]], 2, faiss_threshold=4)
    assert method == "exact" and rows[0, 0] == 3 and "pip install faiss-cpu" in caplog.text
