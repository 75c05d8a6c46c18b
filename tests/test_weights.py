"""Issue #16, part 2: `aacnb download pretrained` fetches what the paper profile starts from.

The PANNs files come over HTTP from a local server on 127.0.0.1 (resumed from a part file, MD5-checked, a bad
file removed); the Hugging Face models come from a local hub cache, checked against the hashes their blobs are
named by; afterwards the paper profile's dry run finds every weight it needs.
"""
import hashlib
import os

import huggingface_hub.constants
import pytest

from aacnb.download import ChecksumError, DownloadError
from aacnb.pipeline import weight_checks
from aacnb.profile import load_profile
from aacnb.retrieval import weights_status
from aacnb.text_encoders import TEXT_ENCODERS
from aacnb.weights import AST_REPO, PANNS_FILES, cli_download, download_hub_model, download_pretrained
from test_download import server  # noqa: F401  (the local HTTP server fixture)


def _panns_table(payloads):
    return {k: {**PANNS_FILES[k], "md5": hashlib.md5(payloads[k]).hexdigest(), "size": len(payloads[k])}
            for k in PANNS_FILES}


def _hub_repo(cache, repo, files):
    "A model in the Hugging Face cache layout: blobs named by SHA-256 (weights) or git blob SHA-1, a snapshot, refs/main."
    d = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(commit)
    snap = d / "snapshots" / commit
    snap.mkdir(parents=True)
    (d / "blobs").mkdir()
    for name, data in files.items():
        h = (hashlib.sha256(data).hexdigest() if name.endswith((".safetensors", ".bin"))
             else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
        (d / "blobs" / h).write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(d / "blobs" / h, snap))
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    for repo in [AST_REPO] + [TEXT_ENCODERS[k]["hub"] for k in ("bert-base", "bert-medium", "roberta-base")]:
        _hub_repo(cache, repo, {"config.json": b'{"model_type": "x"}', "model.safetensors": repo.encode() * 100})
    return cache


def test_the_paper_profile_dry_run_then_finds_every_weight(server, hub_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("AACNB_DATA", str(tmp_path / "data"))
    before = weight_checks(load_profile("paper"))
    missing = [what for what, ok, detail in before if not ok and "aacnb download pretrained" in detail]
    assert len(missing) == 3 and all(w.split()[1] in ("wlcnn14", "cnn14", "ast") for w in missing)  # the text: cached
    only = sorted(d.split("--only ")[1].rstrip("`") for _, ok, d in before if not ok)
    assert only == ["ast", "cnn14", "wavegram-logmel-cnn14"]  # each a name `--only` takes
    payloads = {k: os.urandom(50_000 + i) for i, k in enumerate(PANNS_FILES)}
    for k, f in PANNS_FILES.items():
        server.files[f["name"]] = payloads[k]
    got = download_pretrained(base_url=server.url, progress=False, files=_panns_table(payloads), local_files_only=True)
    assert got["cnn14"].read_bytes() == payloads["cnn14"]
    assert (tmp_path / "data" / "pretrained" / "ast-finetuned-audioset-10-10-0.4593" / "config.json").is_file()
    after = weight_checks(load_profile("paper"))
    assert [(what, ok) for what, ok, _ in after] == [(what, True) for what, _, _ in before]
    n = len(server.requests)
    download_pretrained(base_url=server.url, progress=False, files=_panns_table(payloads), local_files_only=True)
    assert len(server.requests) == n  # present and verified: nothing fetched again


def test_panns_resume_from_a_part_file(server, tmp_path):
    payload = os.urandom(200_000)
    name = PANNS_FILES["cnn14"]["name"]
    server.files[name] = payload
    part = tmp_path / "pretrained" / (name + ".part")
    part.parent.mkdir()
    part.write_bytes(payload[:70_000])  # an interrupted earlier download
    out = download_pretrained(tmp_path, only=["cnn14"], base_url=server.url, progress=False,
                              files=_panns_table({"cnn14": payload, "wavegram-logmel-cnn14": b""}))["cnn14"]
    assert out.read_bytes() == payload and not part.exists()
    assert server.requests == [(name, "bytes=70000-")]


def test_a_panns_md5_mismatch_is_clear_and_removes_the_file(server, tmp_path, capsys):
    name = PANNS_FILES["wavegram-logmel-cnn14"]["name"]
    server.files[name] = b"not the published checkpoint" * 1000
    assert cli_download(["pretrained", "--only", "wavegram-logmel-cnn14", "--root", str(tmp_path),
                         "--base-url", server.url, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and PANNS_FILES["wavegram-logmel-cnn14"]["md5"] in out
    assert list((tmp_path / "pretrained").iterdir()) == []  # neither the file nor its part file is kept


def test_a_damaged_hub_file_is_refused_and_removed(hub_cache):
    snap = download_hub_model("roberta-base", local_files_only=True)
    blob = (snap / "model.safetensors").resolve()
    blob.write_bytes(b"flipped bits")
    with pytest.raises(ChecksumError, match="does not match the hash the Hub names it by"):
        download_hub_model("roberta-base", local_files_only=True)
    assert not blob.exists()


def test_an_absent_hub_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(DownloadError, match="could not fetch bert-base-uncased.*aacnb download pretrained"):
        download_pretrained(tmp_path, only=["bert-base"], local_files_only=True)
    ok, detail = weights_status("bert-base", "text")
    assert not ok and "run `aacnb download pretrained --only bert-base`" in detail
