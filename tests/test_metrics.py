"aacnb.metrics: evaluate() over pycocoevalcap, Java failure modes, SPICE handling, the two CLIs."
import http.server
import io
import json
import sys
import stat
import threading
import warnings
import zipfile
from functools import partial

import numpy as np
import pytest

import aacnb.metrics as M
from aacnb.metrics import (CORENLP_JARS, METRIC_NAMES, MetricsError, SpiceUnavailableWarning, cli_evaluate,
                           cli_metrics_setup, evaluate, ptb_tokenize)

PREDS = ["A dog barks loudly.", "Rain falls on a tin roof", "a car passes by"]
REFS = [["A dog is barking.", "The dog barks at a passing car.", "Dogs bark loudly."],
        ["Rain is falling on a metal roof.", "Heavy rain on a tin roof!"],
        ["A car drives past on a wet road.", "Traffic passes by.", "A vehicle goes by."]]
NO_JAVA = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d")   # scored in Python after PTB


@pytest.fixture(autouse=True)
def _no_spice_jars(monkeypatch):
    "Tests never use real CoreNLP jars (e.g. in pycocoevalcap's spice/lib): SPICE is unavailable unless set up."
    monkeypatch.setattr(M, "spice_jar_dir", lambda: None)


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


def test_spice_runs_when_jars_present(tmp_path, monkeypatch):
    "With jars found, SPICE is called (here a fake java that writes SPICE's JSON) and SPIDEr is computed."
    d = tmp_path / "jars"
    d.mkdir()
    for j in CORENLP_JARS:
        (d / j).write_bytes(b"")
    monkeypatch.setattr(M, "spice_jar_dir", lambda: d)
    script = ("import json,sys; a=sys.argv; open(a[1] + '.argv', 'w').write(' '.join(a));"
              "i=json.load(open(a[a.index('edu.anu.spice.SpiceScorer')+1]));"
              "json.dump([{'image_id':x['image_id'],'scores':{'All':{'f':0.25}}} for x in i],"
              "open(a[a.index('-out')+1],'w'))")
    version = 'if [ "$1" = "-version" ]; then echo \'openjdk version "17.0.15" 2025-04-15\' >&2; exit 0; fi'
    java = _fake_java(tmp_path, f'{version}\nexec {sys.executable} -c "{script}" "{tmp_path}/spice" "$@"')
    corpus, per_clip = evaluate(PREDS, REFS, metrics=("spice",), tokenize=False, java=java)
    assert corpus["spice"] == pytest.approx(0.25)
    np.testing.assert_allclose(per_clip["spice"], 0.25)
    argv = (tmp_path / "spice.argv").read_text()
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in argv      # Java 17: FST needs the opens
    assert "-cache" not in argv and "-subset" in argv and str(d / CORENLP_JARS[1]) in argv
    crash = _fake_java(tmp_path, 'echo "InaccessibleObjectException" >&2; exit 1')
    with pytest.raises(MetricsError, match="(?s)SPICE failed.*InaccessibleObjectException"):
        evaluate(PREDS, REFS, metrics=("spice",), tokenize=False, java=crash)


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
    assert cli_evaluate(["--predictions", p, "--references", r, "--metrics", "cider_d", "--allow-missing",
                         "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["n_clips"] == 2 and [c["file_name"] for c in js["per_clip"]] == ["a.wav", "b.wav"]
    assert cli_evaluate(["--predictions", str(tmp_path / "missing.csv"), "--references", r]) == 2
    assert "predictions file not found" in capsys.readouterr().err


def _fake_corenlp_zip(path, broken=False):
    with zipfile.ZipFile(path, "w") as z:
        for name in CORENLP_JARS:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as jar:
                probe = M._JAR_PROBES[name] + ("en/x.ser.gz" if name.endswith("models.jar") else "")
                jar.writestr("other/thing.class" if broken else probe, b"\xca\xfe")
            z.writestr(f"stanford-corenlp-full-2015-12-09/{name}", buf.getvalue())


def test_metrics_setup_downloads_and_verifies(tmp_path, capsys):
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    _fake_corenlp_zip(srv_dir / "corenlp.zip")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(srv_dir))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/corenlp.zip"
        dest = tmp_path / "spice"
        assert cli_metrics_setup(["--dest", str(dest), "--url", url]) == 0
    finally:
        server.shutdown()
    assert all((dest / j).is_file() for j in CORENLP_JARS)
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["source"] == url and set(manifest["jars"]) == set(CORENLP_JARS)
    assert cli_metrics_setup(["--dest", str(dest), "--verify"]) == 0
    (dest / CORENLP_JARS[0]).write_bytes((dest / CORENLP_JARS[1]).read_bytes())   # tamper
    capsys.readouterr()
    assert cli_metrics_setup(["--dest", str(dest), "--verify"]) == 1
    assert "does not look like" in capsys.readouterr().err


def test_metrics_setup_rejects_bad_zips(tmp_path, capsys):
    _fake_corenlp_zip(tmp_path / "bad.zip", broken=True)
    assert cli_metrics_setup(["--dest", str(tmp_path / "a"), "--zip", str(tmp_path / "bad.zip")]) == 1
    assert "does not look like" in capsys.readouterr().err
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert cli_metrics_setup(["--dest", str(tmp_path / "b"), "--zip", str(tmp_path / "junk.zip")]) == 1
    assert "not a valid zip" in capsys.readouterr().err
    _fake_corenlp_zip(tmp_path / "ok.zip")
    assert cli_metrics_setup(["--dest", str(tmp_path / "c"), "--zip", str(tmp_path / "ok.zip"),
                              "--sha256", "0" * 64]) == 1
    assert "SHA-256" in capsys.readouterr().err
