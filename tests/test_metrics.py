"aacnb.metrics (evaluate over pycocoevalcap, Java failures, SPICE) and the CLIs of caption_csv and spice_setup."
import hashlib
import http.server
import io
import json
import os
import sys
import stat
import threading
import warnings
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import aacnb.metrics as M
import aacnb.spice_setup as S
from aacnb.caption_csv import cli_evaluate
from aacnb.metrics import (CORENLP_JARS, METRIC_NAMES, RHINO_JARS, MetricsError, SpiceUnavailableWarning, evaluate,
                           ptb_tokenize)
from aacnb.spice_setup import cli_metrics_setup

PREDS = ["A dog barks loudly.", "Rain falls on a tin roof", "a car passes by"]
REFS = [["A dog is barking.", "The dog barks at a passing car.", "Dogs bark loudly."],
        ["Rain is falling on a metal roof.", "Heavy rain on a tin roof!"],
        ["A car drives past on a wet road.", "Traffic passes by.", "A vehicle goes by."]]
NO_JAVA = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d")   # scored in Python after PTB


@pytest.fixture(autouse=True)
def _no_spice_jars(monkeypatch, tmp_path):
    "SPICE's jars folder is an empty one here (as where the fetch failed); tests/test_spice.py runs the real jars."
    monkeypatch.setenv("AACNB_SPICE_DIR", str(tmp_path / "no-spice-jars"))


def _pycoco_reference(preds, refs, metrics):
    "The same numbers straight from pycocoevalcap's classes (COCOEvalCap style: tokenise, then score)."
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in r] for i, r in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    out = {}
    b, bs = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        out[f"bleu_{k + 1}"] = (b[k], np.array(bs[k]))
    out["rouge_l"] = Rouge().compute_score(gts, res)
    out["cider_d"] = Cider().compute_score(gts, res)
    return out


def test_matches_pycocoevalcap_without_meteor():
    preds = PREDS + ["", "Café — naïve ☃!"]                  # an empty prediction, unusual characters
    refs = REFS + [["Silence."], ["a café", "naïve snowman"]]   # a single reference
    with pytest.warns(SpiceUnavailableWarning):
        corpus, per_clip = evaluate(preds, refs, metrics=NO_JAVA + ("spider",))
    ref = _pycoco_reference(preds, refs, NO_JAVA)
    for m in NO_JAVA:
        assert corpus[m] == pytest.approx(ref[m][0], abs=1e-12), m
        np.testing.assert_allclose(per_clip[m], ref[m][1], atol=1e-12)
    assert corpus["spider"] is None and per_clip["spider"] is None
    assert list(corpus) == list(NO_JAVA) + ["spider"]
    # BLEU's corpus value is not the mean of per-clip values
    assert abs(corpus["bleu_4"] - per_clip["bleu_4"].mean()) > 1e-3


def test_spice_absent_gives_none_not_zero_and_one_warning():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        corpus, per_clip = evaluate(PREDS, REFS, metrics=("cider_d", "spice", "spider"))
    assert [x.category for x in w].count(SpiceUnavailableWarning) == 1
    assert corpus["spice"] is None and corpus["spider"] is None and per_clip["spice"] is None
    assert corpus["cider_d"] > 0


def test_spider_from_given_spice():
    spice = [0.3, 0.1, 0.2]
    corpus, per_clip = evaluate(PREDS, REFS, metrics=("cider_d", "spice", "spider"), spice_scores=spice)
    np.testing.assert_allclose(per_clip["spider"], (per_clip["cider_d"] + np.array(spice)) / 2)
    assert corpus["spider"] == pytest.approx((corpus["cider_d"] + 0.2) / 2)
    assert corpus["spider"] == pytest.approx(per_clip["spider"].mean())
    only, _ = evaluate(PREDS, REFS, metrics=("spider",), spice_scores=spice)
    assert list(only) == ["spider"] and only["spider"] == pytest.approx(corpus["spider"])


def test_bad_input():
    with pytest.raises(ValueError, match="3 predictions but 2"):
        evaluate(PREDS, REFS[:2])
    with pytest.raises(TypeError, match="prediction 1 is int"):
        evaluate(["a", 1, "b"], REFS)
    with pytest.raises(TypeError, match=r"references\[2\]\[0\] is float"):
        evaluate(PREDS, REFS[:2] + [[1.5]])
    with pytest.raises(TypeError, match=r"references\[0\] must be a list"):
        evaluate(["a"], ["a dog"])
    with pytest.raises(ValueError, match="no predictions"):
        evaluate([], [])
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(PREDS, REFS, metrics=("cider",))
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        evaluate(PREDS, REFS, spice_scores=[0.1])


def test_ptb_tokenizer_unusual_characters():
    out = ptb_tokenize(["Café — naïve ☃ 日本", "tab\there", "new\nline\r\nend\u2028x\x85y\x00z", "", "",
                        "\U0001F600 emoji", "it's (loud)!", "   "])
    assert len(out) == 8
    assert out[0] == "café naïve ☃ 日本"
    assert out[1] == "tab here"
    assert out[2] == "new line end x y z"
    assert out[3:5] == ["", ""] and out[7] == ""
    assert out[6] == "it 's -lrb- loud -rrb-"      # pycocoevalcap keeps the lower-cased bracket tokens


def _fake_java(tmp_path, body):
    p = tmp_path / "java"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_missing_java(monkeypatch):
    monkeypatch.setenv("AACNB_JAVA", "/nonexistent/bin/java")
    with pytest.raises(MetricsError, match="Java was not found"):
        evaluate(PREDS, REFS, metrics=("cider_d",))


def test_java_crash(tmp_path, monkeypatch):
    crash = _fake_java(tmp_path, 'echo "Exception in thread main java.lang.OutOfMemoryError" >&2; exit 3')
    with pytest.raises(MetricsError, match=r"(?s)PTB tokenizer failed: Java exited with code 3.*OutOfMemoryError"):
        evaluate(PREDS, REFS, metrics=("cider_d",), java=crash)
    with pytest.raises(MetricsError, match=r"(?s)METEOR failed: Java exited with code 3.*OutOfMemoryError"):
        evaluate(PREDS, REFS, metrics=("meteor",), tokenize=False, java=crash)
    extra = _fake_java(tmp_path, 'cat > /dev/null; printf "a\\nb\\nc\\nd\\n"')   # one line too many
    with pytest.raises(MetricsError, match="returned 4 lines for 3 captions"):
        ptb_tokenize(["a", "b", "c"], java=extra)


def test_spice_command_line(tmp_path, monkeypatch):
    "SPICE gets its classpath, the Java 17 flags and the cache folder from aacnb (here a fake java writes SPICE's JSON)."
    monkeypatch.setattr(M, "spice_classpath", lambda java=None, jar_dir=None: ["/jars/spice-1.0.jar", "/jars/rhino.jar"])
    script = ("import json,sys; a=sys.argv; open(a[1] + '.argv', 'w').write(' '.join(a));"
              "i=json.load(open(a[a.index('edu.anu.spice.SpiceScorer')+1]));"
              "json.dump([{'image_id':x['image_id'],'scores':{'All':{'f':0.25}}} for x in i],"
              "open(a[a.index('-out')+1],'w'))")
    version = 'if [ "$1" = "-version" ]; then echo \'openjdk version "17.0.15" 2025-04-15\' >&2; exit 0; fi'
    java = _fake_java(tmp_path, f'{version}\nexec {sys.executable} -c "{script}" "{tmp_path}/spice" "$@"')
    monkeypatch.setenv("AACNB_SPICE_CACHE", str(tmp_path / "parse-cache"))
    corpus, per_clip = evaluate(PREDS, REFS, metrics=("spice",), tokenize=False, java=java)
    assert corpus["spice"] == pytest.approx(0.25)
    np.testing.assert_allclose(per_clip["spice"], 0.25)
    argv = (tmp_path / "spice.argv").read_text()
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in argv      # Java 17: FST needs the opens
    assert f"-cp /jars/spice-1.0.jar{os.pathsep}/jars/rhino.jar " in argv and "-subset" in argv
    assert f"-cache {tmp_path / 'parse-cache'} " in argv and (tmp_path / "parse-cache").is_dir()
    monkeypatch.setenv("AACNB_SPICE_CACHE", "off")
    evaluate(PREDS, REFS, metrics=("spice",), tokenize=False, java=java)
    assert "-cache" not in (tmp_path / "spice.argv").read_text()
    crash = _fake_java(tmp_path, 'echo "InaccessibleObjectException" >&2; exit 1')
    with pytest.raises(MetricsError, match="(?s)SPICE failed.*InaccessibleObjectException"):
        evaluate(PREDS, REFS, metrics=("spice",), tokenize=False, java=crash)


def test_spice_needs_a_javascript_engine_on_java_15_and_later(tmp_path, monkeypatch):
    "CoreNLP jars without Rhino: fine on Java 11 (Nashorn), unavailable on Java 17, saying how to get Rhino."
    d = tmp_path / "jars"
    d.mkdir()
    for j in CORENLP_JARS:
        with open(d / j, "wb") as f:
            f.truncate(M.SPICE_JARS[j][1])              # the recorded size: what the cheap check looks at
    monkeypatch.setenv("AACNB_SPICE_DIR", str(d))
    monkeypatch.setattr(M, "DEBIAN_RHINO", tmp_path / "no-debian-rhino.jar")
    monkeypatch.setattr(M, "_java_major", lambda java: 11)
    assert M.spice_classpath()[2:] == [str(d / j) for j in CORENLP_JARS]
    monkeypatch.setattr(M, "_java_major", lambda java: 17)
    with pytest.raises(M.SpiceUnavailable, match="(?s)Java 17 has no JavaScript engine.*aacnb metrics-setup"):
        M.spice_classpath()
    with pytest.warns(SpiceUnavailableWarning, match="librhino-java"):
        corpus, _ = evaluate(PREDS, REFS, metrics=("cider_d", "spider"), tokenize=False)
    assert corpus["spider"] is None and corpus["cider_d"] > 0
    (tmp_path / "no-debian-rhino.jar").write_bytes(b"")        # Debian's librhino-java installed
    assert M.spice_classpath()[-1] == str(tmp_path / "no-debian-rhino.jar")


@pytest.mark.slow
def test_full_evaluate_with_meteor_edge_cases():
    "One METEOR run (Java start-up ~10 s): empty prediction, unusual characters, a single reference."
    preds = ["", "Café — naïve ☃ 日本 dog |||", "a dog barks", "rain\nfalls"]
    refs = [["birds sing", "birds are singing"], ["a café with a dog", "dog in a café"], ["a dog barks"],
            ["rain falls on a roof", "rain"]]
    with pytest.warns(SpiceUnavailableWarning):
        corpus, per_clip = evaluate(preds, refs)
    assert list(corpus) == list(METRIC_NAMES)
    for m in METRIC_NAMES[:7]:
        assert per_clip[m].shape == (4,) and np.isfinite(per_clip[m]).all(), m
        assert 0 <= corpus[m] and np.isfinite(corpus[m])
    assert per_clip["meteor"][0] == 0.0 and per_clip["bleu_1"][0] < 1e-6
    assert per_clip["meteor"][2] > 0.9                  # exact match, single reference
    assert corpus["spice"] is None and corpus["spider"] is None
    from pycocoevalcap.meteor.meteor import Meteor   # our METEOR protocol = pycocoevalcap's on the same tokens
    toks = ptb_tokenize(preds + [r for rs in refs for r in rs])
    it = iter(toks[4:])
    gts = {i: [next(it) for _ in rs] for i, rs in enumerate(refs)}
    score, scores = Meteor().compute_score(gts, {i: [h] for i, h in enumerate(toks[:4])})
    assert corpus["meteor"] == pytest.approx(score, abs=1e-9)
    np.testing.assert_allclose(per_clip["meteor"], scores, atol=1e-9)


def _csvs(tmp_path):
    (tmp_path / "p.csv").write_text("file_name,caption\na.wav,a dog barks\nb.wav,rain falls on a roof\n")
    (tmp_path / "r.csv").write_text("file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
                                    "a.wav,A dog is barking.,Dogs bark.,A dog barks.,x,y\n"
                                    "b.wav,Rain falls on a tin roof.,Heavy rain.,Rain.,z,w\n"
                                    "c.wav,A bell.,Bells ring.,a,b,c\n")
    return str(tmp_path / "p.csv"), str(tmp_path / "r.csv")


def test_cli_evaluate(tmp_path, capsys):
    p, r = _csvs(tmp_path)
    assert cli_evaluate(["--predictions", p, "--references", r, "--metrics", "bleu_4,cider_d"]) == 2
    assert "1 reference clips have no prediction" in capsys.readouterr().err
    assert cli_evaluate(["--predictions", p, "--references", r, "--metrics", "bleu_4,cider_d,spider",
                         "--allow-missing"]) == 0
    out = capsys.readouterr()
    assert "2 clips" in out.out and "cider_d" in out.out and "n/a" in out.out and "SPICE skipped" in out.err
    assert "run `aacnb metrics-setup`" in out.err                    # the one command that fixes it
    assert cli_evaluate(["--predictions", p, "--references", r, "--metrics", "cider_d", "--allow-missing",
                         "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["n_clips"] == 2 and [c["file_name"] for c in js["per_clip"]] == ["a.wav", "b.wav"]
    assert cli_evaluate(["--predictions", str(tmp_path / "missing.csv"), "--references", r]) == 2
    assert "predictions file not found" in capsys.readouterr().err


FAKE_JARS = {name: f"not really {name}".encode() for name in M.SPICE_JARS}
FAKE_MVN = """#!{python}
import pathlib, re, sys
args = sys.argv[1:]
pathlib.Path(sys.argv[0] + ".log").write_text(" ".join(args))
if {fail}:
    print("[ERROR] Failed to execute goal: Could not transfer artifact: Network is unreachable")
    sys.exit(1)
pom = pathlib.Path(args[args.index("-f") + 1]).read_text()
out = pathlib.Path(next(a.split("=", 1)[1] for a in args if a.startswith("-DoutputDirectory=")))
repo = pathlib.Path(next(a.split("=", 1)[1] for a in args if a.startswith("-Dmaven.repo.local=")))
out.mkdir(parents=True)
repo.mkdir(parents=True)
dep = r"<dependency><groupId>[^<]+</groupId><artifactId>([^<]+)</artifactId><version>([^<]+)</version>"
for a, v, c in re.findall(dep + r"(?:<classifier>([^<]+)</classifier>)?", pom):
    name = a + "-" + v + ("-" + c if c else "") + ".jar"
    (out / name).write_bytes(b"not really " + name.encode())
    (repo / name).write_bytes(b"not really " + name.encode())
    with open(sys.argv[0] + ".log", "a") as log:
        log.write(" wrote:" + name)
"""


@pytest.fixture
def fake_jars(monkeypatch, tmp_path):
    "SPICE_JARS records small stand-in jars; `mvn` on the PATH is a script that 'downloads' them (or fails: 'fail')."
    fake = {n: (M.SPICE_JARS[n][0], len(b), hashlib.sha256(b).hexdigest()) for n, b in FAKE_JARS.items()}
    for module in (M, S):          # metrics finds the jars, spice_setup fetches and checks them: both read the record
        monkeypatch.setattr(module, "SPICE_JARS", fake)
    monkeypatch.setattr(M, "DEBIAN_RHINO", tmp_path / "no-debian-rhino.jar")
    monkeypatch.setattr(M, "_java_major", lambda java: 17)

    def make(mode="ok"):
        bin_dir = tmp_path / f"bin-{mode}"
        bin_dir.mkdir()
        (bin_dir / "mvn").write_text(FAKE_MVN.format(python=sys.executable, fail=mode == "fail"))
        (bin_dir / "mvn").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        return bin_dir / "mvn.log"
    return make


def test_metrics_setup_with_maven(tmp_path, fake_jars, capsys):
    log = fake_jars("ok")
    dest = tmp_path / "cache" / "spice"
    assert cli_metrics_setup(["--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(M.SPICE_JARS)     # the POM and the repository are gone
    args = log.read_text()
    assert "copy-dependencies" in args and f"-Dmaven.repo.local={dest}" in args
    out = capsys.readouterr().out
    assert all(f"ok  {dest / n}" in out for n in M.SPICE_JARS)   # the models jar came by its classifier
    stamp = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    log.unlink()
    assert cli_metrics_setup(["--dest", str(dest), "--quiet"]) == 0           # what `make install` runs each time
    assert capsys.readouterr() == ("", "") and not log.exists()             # nothing printed, Maven not run
    assert stamp == {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    (dest / RHINO_JARS[0]).write_bytes(b"not really rhino-1.7.15.X.jar")    # same size, other bytes
    assert cli_metrics_setup(["--dest", str(dest), "--verify"]) == 1
    assert f"not the {M.SPICE_JARS[RHINO_JARS[0]][2]} recorded" in capsys.readouterr().err
    assert cli_metrics_setup(["--dest", str(dest), "--quiet"]) == 0           # fetched again, that one only
    assert (dest / RHINO_JARS[0]).read_bytes() == FAKE_JARS[RHINO_JARS[0]]
    assert log.read_text().split(" wrote:")[1:] == [RHINO_JARS[0]]


def _serve(folder):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stanford_zip(path, jars):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in jars.items():
            z.writestr(f"stanford-corenlp-full-2015-12-09/{name}", data)


def test_metrics_setup_falls_back_to_the_stanford_zip(tmp_path, fake_jars, monkeypatch, capsys):
    fake_jars("fail")
    (tmp_path / "srv").mkdir()
    _stanford_zip(tmp_path / "srv" / "corenlp.zip", {n: FAKE_JARS[n] for n in CORENLP_JARS})
    server = _serve(tmp_path / "srv")
    dest = tmp_path / "spice"
    try:
        url = f"http://127.0.0.1:{server.server_port}/corenlp.zip"
        # Maven fails; the zip gives CoreNLP but no Rhino, which Java 17 needs: not installed, and why.
        assert cli_metrics_setup(["--dest", str(dest), "--url", url]) == 1
        err = capsys.readouterr().err
        assert "Java 17 has no JavaScript engine" in err and "Maven could not fetch" in err and "Network" in err
        assert sorted(p.name for p in dest.iterdir()) == sorted(CORENLP_JARS)
        (tmp_path / "no-debian-rhino.jar").write_bytes(b"")              # now with Debian's librhino-java
        assert cli_metrics_setup(["--dest", str(dest), "--url", url]) == 0
    finally:
        server.shutdown()
    assert cli_metrics_setup(["--dest", str(dest), "--verify"]) == 0
    monkeypatch.setenv("AACNB_SPICE_DIR", str(dest))
    assert M.spice_classpath()[-1] == str(tmp_path / "no-debian-rhino.jar")


def test_metrics_setup_refuses_what_it_cannot_verify(tmp_path, fake_jars, capsys):
    fake_jars("fail")
    _stanford_zip(tmp_path / "other.zip", {n: b"other bytes" for n in CORENLP_JARS})
    assert cli_metrics_setup(["--dest", str(tmp_path / "a"), "--no-maven", "--zip", str(tmp_path / "other.zip")]) == 1
    assert "recorded for stanford-corenlp-3.6.0" in capsys.readouterr().err
    assert list((tmp_path / "a").iterdir()) == []                            # nothing unverified left behind
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert cli_metrics_setup(["--dest", str(tmp_path / "b"), "--no-maven", "--zip", str(tmp_path / "junk.zip")]) == 1
    assert "not a valid zip" in capsys.readouterr().err
    _stanford_zip(tmp_path / "half.zip", {CORENLP_JARS[0]: FAKE_JARS[CORENLP_JARS[0]]})
    assert cli_metrics_setup(["--dest", str(tmp_path / "c"), "--no-maven", "--zip", str(tmp_path / "half.zip")]) == 1
    assert "does not contain" in capsys.readouterr().err
    # Both routes fail (Maven errors, nothing listens on the URL): exit 1, each reason, the command to retry.
    assert cli_metrics_setup(["--dest", str(tmp_path / "d"), "--url", "http://127.0.0.1:9/none.zip"]) == 1
    err = capsys.readouterr().err
    assert "Maven could not fetch" in err and "Stanford zip (http://127.0.0.1:9/none.zip)" in err
    assert "run `aacnb metrics-setup`" in err
