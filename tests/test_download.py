"The real download path against a local HTTP server on 127.0.0.1: resume, MD5, extraction, offline errors."
import hashlib
import http.server
import re
import socket
import threading

import numpy as np
import py7zr
import pytest
import soundfile as sf

from aacnb.download import (ChecksumError, DownloadError, cli_download, download_audiocaps_csvs, download_clotho,
                            download_file, download_macs, extract_archive, md5sum)


class _Handler(http.server.BaseHTTPRequestHandler):
    "Serves `server.files` (name -> bytes) with HTTP Range support; records each request's Range header."

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        srv = self.server
        name = self.path.lstrip("/").split("?")[0]
        srv.requests.append((name, self.headers.get("Range")))
        if name not in srv.files:
            self.send_error(404, "not found")
            return
        data = srv.files[name]
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # promise the whole body, send part of it, hang up
            self.wfile.write(body[: srv.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ranges, srv.cut_after = {}, [], True, None
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _md5(b):
    return hashlib.md5(b).hexdigest()


PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8))


def test_full_download_md5_ok(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    out = download_file(f"{server.url}/a.bin?download=1", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD and md5sum(out) == _md5(PAYLOAD)
    assert not (tmp_path / "a.bin.part").exists()
    assert server.requests == [("a.bin", None)]
    # present and valid: not fetched again
    download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert len(server.requests) == 1


def test_resume_from_part_file(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:123_457])
    out = download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert server.requests == [("a.bin", "bytes=123457-")]


def test_broken_connection_then_resume(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="resume"):
        download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert not (tmp_path / "a.bin").exists()
    n = (tmp_path / "a.bin.part").stat().st_size
    assert 0 < n < len(PAYLOAD)
    server.cut_after = None
    download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests[-1] == ("a.bin", f"bytes={n}-")


def test_server_ignoring_range_restarts(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    server.ranges = False
    (tmp_path / "a.bin.part").write_bytes(b"garbage that must not be kept")
    download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_file_416(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_is_clear_and_discards_file(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as e:
        download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=wrong, progress=False)
    msg = str(e.value)
    assert wrong in msg and _md5(PAYLOAD) in msg and "a.bin" in msg
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_existing_bad_file_is_moved_aside_and_refetched(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin").write_bytes(b"corrupt")
    download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert (tmp_path / "a.bin.bad").read_bytes() == b"corrupt"


def test_http_404_and_unreachable_are_clear(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server.url}/nope.bin", tmp_path / "nope.bin", progress=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    with pytest.raises(DownloadError) as e:
        download_file(f"http://127.0.0.1:{port}/a.bin", tmp_path / "a.bin", progress=False, timeout=5)
    assert "could not reach" in str(e.value) and str(tmp_path / "a.bin") in str(e.value)


def _make_7z(tmp_path, split, n=3, flat=False):
    src = tmp_path / "src" / split
    src.mkdir(parents=True)
    for i in range(n):
        sf.write(src / f"clip {i}.wav", np.zeros(1600, "float32"), 16000)
    arc = tmp_path / f"clotho_audio_{split}.7z"
    with py7zr.SevenZipFile(arc, "w") as z:
        if flat:
            for p in sorted(src.iterdir()):
                z.write(p, p.name)
        else:
            z.writeall(src, split)
    return arc


def test_extract_7z_with_wavs(tmp_path):
    arc = _make_7z(tmp_path, "development")
    out = extract_archive(arc, tmp_path / "out")
    assert sorted(p.name for p in out) == ["clip 0.wav", "clip 1.wav", "clip 2.wav"]
    assert all(p.parent == tmp_path / "out" / "development" for p in out)
    y, sr = sf.read(out[0])
    assert sr == 16000 and len(y) == 1600
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["development"]


def test_extract_zip_and_rejects_traversal(tmp_path):
    import zipfile
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("x/a.txt", "hi")
    assert [p.read_text() for p in extract_archive(tmp_path / "a.zip", tmp_path / "o")] == ["hi"]
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(ValueError, match="refusing"):
        extract_archive(tmp_path / "evil.zip", tmp_path / "o2")
    with pytest.raises(ValueError, match="not a readable"):
        (tmp_path / "junk.7z").write_bytes(b"not an archive")
        extract_archive(tmp_path / "junk.7z", tmp_path / "o3")


def _clotho_fixture(server, tmp_path, flat=False):
    arc = _make_7z(tmp_path, "validation", flat=flat)
    caps = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n" + "".join(
        f"clip {i}.wav,a,b,c,d,e\n" for i in range(3))
    meta = "file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license\n"
    files = {}
    for kind, name, data in [("audio", arc.name, arc.read_bytes()),
                             ("captions", "clotho_captions_validation.csv", caps.encode()),
                             ("metadata", "clotho_metadata_validation.csv", meta.encode())]:
        server.files[name] = data
        files[kind] = {"name": name, "url": f"{server.url}/{name}", "md5": _md5(data)}
    return {"validation": files}


@pytest.mark.parametrize("flat", [False, True])
def test_download_clotho_layout(server, tmp_path, flat):
    files = _clotho_fixture(server, tmp_path, flat)
    root = tmp_path / "root"
    cdir = download_clotho(root, ["val"], progress=False, files=files)
    assert cdir == root / "CLOTHO_v2.1"
    wavs = sorted((cdir / "clotho_audio_files" / "validation").glob("*.wav"))
    assert [p.name for p in wavs] == ["clip 0.wav", "clip 1.wav", "clip 2.wav"]
    assert (cdir / "clotho_csv_files" / "clotho_captions_validation.csv").exists()
    assert (cdir / "clotho_csv_files" / "clotho_metadata_validation.csv").exists()
    assert not list((cdir / "archives").glob("*.7z"))  # archive removed after extraction
    n = len(server.requests)
    download_clotho(root, ["validation"], progress=False, files=files)  # complete: nothing fetched
    assert len(server.requests) == n


def test_download_clotho_checksum_mismatch(server, tmp_path):
    files = _clotho_fixture(server, tmp_path)
    files["validation"]["audio"]["md5"] = "f" * 32
    with pytest.raises(ChecksumError, match="ffff"):
        download_clotho(tmp_path / "root", ["validation"], progress=False, files=files)
    cdir = tmp_path / "root" / "CLOTHO_v2.1"
    assert not (cdir / "clotho_audio_files" / "validation").exists()
    assert not list((cdir / "archives").iterdir())


def test_download_clotho_offline_says_what_to_do(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DownloadError) as e:
        download_clotho(tmp_path / "root", ["evaluation"], progress=False, base_url=f"http://127.0.0.1:{port}")
    msg = str(e.value)
    assert "zenodo.org/record/4783391" in msg and "clotho_audio_evaluation.7z" in msg
    assert str(tmp_path / "root" / "CLOTHO_v2.1" / "archives" / "clotho_audio_evaluation.7z") in msg
    assert cli_download(["clotho", "--root", str(tmp_path / "r2"), "--splits", "eval", "--no-progress",
                         "--base-url", f"http://127.0.0.1:{port}"]) == 1
    assert "could not reach" in capsys.readouterr().out


def test_download_macs_takes_only_named_clips(server, tmp_path):
    import zipfile
    yaml_text = ("files:\n- filename: park-a.wav\n  annotations:\n  - {annotator_id: 1, sentence: birds sing, tags: []}\n"
                 "- filename: bus-b.wav\n  annotations:\n  - {annotator_id: 2, sentence: a bus passes, tags: []}\n")
    server.files["MACS.yaml"] = yaml_text.encode()
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(3200, "float32"), 16000)
    zips = {}
    for name, members in [("tau.audio.1.zip", ["park-a.wav", "other.wav"]), ("tau.audio.2.zip", ["bus-b.wav"]),
                          ("tau.audio.3.zip", ["unused.wav"])]:
        buf = tmp_path / name
        with zipfile.ZipFile(buf, "w") as z:
            for m in members:
                z.write(wav, f"TAU-urban-acoustic-scenes-2019-development/audio/{m}")
        server.files[name] = zips[name] = buf.read_bytes()
    files = {"annotations": {"name": "MACS.yaml", "url": "", "md5": _md5(yaml_text.encode())},
             **{n: {"name": n, "url": "", "md5": _md5(b)} for n, b in zips.items()}}
    mdir = download_macs(tmp_path / "root", progress=False, base_url=server.url, files=files)
    assert sorted(p.name for p in (mdir / "audio").iterdir()) == ["bus-b.wav", "park-a.wav"]
    assert "tau.audio.3.zip" not in [r[0] for r in server.requests]  # everything found before the third archive
    assert not list((mdir / "archives").iterdir())
    from aacnb.datasets import read_macs
    assert [r.captions for r in read_macs(tmp_path / "root")] == [["birds sing"], ["a bus passes"]]


def test_download_audiocaps_csvs_and_cli(server, tmp_path, capsys):
    for split in ("train", "val", "test"):
        server.files[f"{split}.csv"] = b"audiocap_id,youtube_id,start_time,caption\n1,abc,0,a dog barks\n"
    assert cli_download(["audiocaps", "--root", str(tmp_path), "--base-url", server.url, "--no-progress"]) == 0
    assert (tmp_path / "AUDIOCAPS" / "csv_files" / "val.csv").exists()
    assert "cannot be redistributed" in capsys.readouterr().out


def test_macs_offline_says_what_to_do(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DownloadError, match="MACS by hand"):
        download_macs(tmp_path, progress=False, base_url=f"http://127.0.0.1:{port}")
