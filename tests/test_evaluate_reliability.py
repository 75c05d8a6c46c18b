"""Issue #19, item 5: `aacnb evaluate` reads its CSVs strictly, and says which file, which line and what is wrong.

Before, a row without its caption field was scored as an empty caption, a second reference row for a clip
silently replaced the first, an unbalanced quote swallowed the rows after it (with --allow-missing, one
"caption" absorbed four rows, file names included), and a UTF-8 file with one stray byte was re-read whole as
latin-1. Now: UTF-8 (with or without BOM) or UTF-16/32 recognised by their BOM, anything else only with
--encoding; every row exactly the header's fields; no field across lines; one row per clip.
"""
import json
from pathlib import Path

import pytest

from aacnb.caption_csv import cli_evaluate, read_predictions, read_references

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clotho-captions"
REFS = ("file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        "a.wav,A dog is barking.,Dogs bark.,A dog barks.,A dog barks loudly.,A barking dog.\n"
        "b.wav,Rain falls on a roof.,Heavy rain.,Rain on a tin roof.,It rains.,Rain is falling.\n"
        "c.wav,A bell rings.,Bells ring.,A church bell.,A bell tolls.,Bells are ringing.\n")
PREDS = "file_name,caption\na.wav,a dog barks\nb.wav,rain falls on a roof\nc.wav,a bell rings\n"


def _files(tmp_path, preds=PREDS, refs=REFS):
    p, r = tmp_path / "p.csv", tmp_path / "r.csv"
    p.write_bytes(preds if isinstance(preds, bytes) else preds.encode())
    r.write_bytes(refs if isinstance(refs, bytes) else refs.encode())
    return str(p), str(r)


def _evaluate(capsys, p, r, *extra):
    rc = cli_evaluate(["--predictions", p, "--references", r, "--metrics", "bleu_1,cider_d", "--json", *extra])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else None), out.err


def test_a_row_without_its_caption_field_is_an_error_not_an_empty_caption(tmp_path, capsys):
    p, r = _files(tmp_path, preds="file_name,caption\na.wav,a dog barks\nb.wav\nc.wav,a bell rings\n")
    rc, _, err = _evaluate(capsys, p, r)
    assert rc == 2 and f"{p}, line 3: 1 field(s) where the header has 2" in err
    # an explicitly empty caption is a prediction (an empty one), and is scored as such
    p, r = _files(tmp_path, preds="file_name,caption\na.wav,a dog barks\nb.wav,\nc.wav,a bell rings\n")
    rc, res, _ = _evaluate(capsys, p, r)
    assert rc == 0 and res["per_clip"][1]["cider_d"] == 0.0


def test_an_unquoted_comma_in_a_caption_is_an_error(tmp_path, capsys):
    p, r = _files(tmp_path, preds="file_name,caption\na.wav,a dog barks, then stops\nb.wav,rain\nc.wav,a bell\n")
    rc, _, err = _evaluate(capsys, p, r)
    assert rc == 2 and f"{p}, line 2: 3 field(s) where the header has 2" in err and "unquoted comma" in err


def test_a_clip_listed_twice_in_the_references_is_an_error_naming_both_lines(tmp_path, capsys):
    refs = REFS + "a.wav,Something else entirely.,x,y,z,w\n"
    p, r = _files(tmp_path, refs=refs)
    rc, _, err = _evaluate(capsys, p, r)
    assert rc == 2 and f"{r}, line 5: 'a.wav' appears again (first on line 2)" in err
    p, r = _files(tmp_path, preds=PREDS + "a.wav,a cat\n")
    rc, _, err = _evaluate(capsys, p, r)
    assert rc == 2 and f"{p}, line 5: 'a.wav' appears again (first on line 2)" in err


@pytest.mark.parametrize("allow_missing", [False, True])
def test_an_unbalanced_quote_does_not_swallow_rows(tmp_path, capsys, allow_missing):
    # the quote opened on line 2 closes on line 4: before, with --allow-missing, a.wav's "caption" held b.wav's
    # and c.wav's rows, and the clips were scored on that
    preds = 'file_name,caption\na.wav,"a dog barks\nb.wav,rain falls\nc.wav,a bell rings"\n'
    p, r = _files(tmp_path, preds=preds)
    rc, _, err = _evaluate(capsys, p, r, *(["--allow-missing"] if allow_missing else []))
    assert rc == 2 and f"{p}, line 2: a quoted field runs over lines 2-4" in err and "unbalanced quote" in err
    p, r = _files(tmp_path, preds='file_name,caption\na.wav,"a dog barks\nb.wav,rain falls\nc.wav,a "bell"\n')
    rc, _, err = _evaluate(capsys, p, r, *(["--allow-missing"] if allow_missing else []))
    assert rc == 2 and f"{p}, line 2: a quoted field opened on line 2 runs to line 4" in err
    p, r = _files(tmp_path, preds='file_name,caption\na.wav,a dog\nb.wav,"rain falls\nc.wav,a bell\n')
    rc, _, err = _evaluate(capsys, p, r, "--allow-missing")
    assert rc == 2 and f"{p}, line 3: a quoted field opened on line 3 is never closed" in err


def test_a_stray_byte_is_an_error_naming_its_line_and_encoding_is_never_guessed(tmp_path, capsys):
    refs = REFS.replace("A bell rings.", "A café bell rings.").encode()  # UTF-8, one non-ASCII word
    preds = PREDS.encode().replace(b"rain falls", b"rain\xe9falls")       # one latin-1 byte
    p, r = _files(tmp_path, preds=preds, refs=refs)
    rc, _, err = _evaluate(capsys, p, r)
    assert rc == 2 and f"{p}, line 3: byte 0xE9 (byte 11 of the line) is not valid UTF-8" in err
    assert "--encoding" in err
    # the references stay UTF-8: their é is read as é, not as the two latin-1 characters of its bytes
    assert read_references(r)["c.wav"][0] == "A café bell rings."
    assert read_predictions(p, encoding="latin-1")["b.wav"] == "rain\xe9falls on a roof"
    # with the encoding named, the file is scored (here both files are read as latin-1: ASCII is the same)
    p, r = _files(tmp_path, preds=preds)  # ASCII references
    rc, res, _ = _evaluate(capsys, p, r, "--encoding", "latin-1")
    assert rc == 0 and res["n_clips"] == 3
    rc, _, err = _evaluate(capsys, p, r, "--encoding", "klingon")
    assert rc == 2 and "unknown encoding 'klingon'" in err


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_utf8_with_bom_and_utf16_32_by_their_bom_score_as_utf8(tmp_path, capsys, codec):
    refs = REFS.replace("A bell rings.", "A café bell rings.")
    p, r = _files(tmp_path, preds=PREDS, refs=refs)
    _, want, _ = _evaluate(capsys, p, r)
    bom = {"utf-16-be": b"\xfe\xff"}.get(codec, b"")
    p, r = _files(tmp_path, preds=bom + PREDS.encode(codec), refs=bom + refs.encode(codec))
    rc, got, _ = _evaluate(capsys, p, r)
    assert rc == 0 and got == want
    assert read_references(r)["c.wav"][0] == "A café bell rings."


def test_other_malformed_files_name_the_problem(tmp_path, capsys):
    for preds, msg in [("", "is empty (no header line)"),
                       ("file_name,caption\n", "no predictions (only a header)"),
                       ("name,text\na.wav,x\n", "expected columns file_name,caption"),
                       ("file_name,caption,caption\na.wav,x,y\n", "names column(s) ['caption'] twice"),
                       ("file_name,caption\n,a dog\n", "line 2: the file_name field is empty"),
                       ('file_name,caption\na.wav,"a dog"barks\n', "line 2: ',' expected after '\"'"),
                       ("file_name,caption\na.wav,a\x00dog\n", "line 2: a NUL character"),
                       ("file_name,caption\na.wav,a dog\n".encode("utf-16-le"), "line 1: a NUL character")]:
        p, r = _files(tmp_path, preds=preds)
        rc, _, err = _evaluate(capsys, p, r)
        assert rc == 2 and p in err and msg in err, (preds, err)
    p, r = _files(tmp_path, refs="file_name,caption_1\na.wav,  \n")
    rc, _, err = _evaluate(capsys, p, r)
    assert rc == 2 and f"{r}, line 2: 'a.wav' has no reference caption" in err


def test_a_directory_given_as_a_csv_says_so(tmp_path, capsys):
    p, r = _files(tmp_path)
    (tmp_path / "folder").mkdir()
    rc, _, err = _evaluate(capsys, str(tmp_path / "folder"), r)
    assert rc == 2 and "predictions file" in err and "is a directory, not a CSV file" in err
    rc, _, err = _evaluate(capsys, p, str(tmp_path / "folder"))
    assert rc == 2 and "references file" in err and "is a directory" in err


def test_only_caption_n_columns_are_references(tmp_path):
    # e.g. the DCASE per-system outputs: file_name, caption_predicted, caption_1..5, scores; the prediction is
    # not one of its own references
    (tmp_path / "r.csv").write_text("file_name,caption_predicted,caption_1,caption_2,bleu_1\n"
                                    "a.wav,a dog,a dog barks,dogs bark,0.5\n")
    assert read_references(tmp_path / "r.csv") == {"a.wav": ["a dog barks", "dogs bark"]}


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (the project's shared folder with the real "
                                                 "Clotho caption CSVs is not beside this checkout)")
def test_the_real_clotho_csvs_read_strictly(tmp_path, capsys):
    dev = read_references(SHARED / "clotho_captions_development.csv")
    ev = read_references(SHARED / "clotho_captions_evaluation.csv")
    third = read_references(SHARED / "third_party_system_outputs_eval.csv")
    assert (len(dev), len(ev), len(third)) == (2893, 1045, 1040)
    assert all(len(v) == 5 for d in (dev, ev, third) for v in d.values())
    # a real system's predictions for 30 clips, scored against that file's references (caption_1..5)
    import csv
    with open(SHARED / "third_party_system_outputs_eval.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:30]
    with open(tmp_path / "p.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption"])
        w.writerows([r["file_name"], r["caption_predicted"]] for r in rows)
    rc, res, err = _evaluate(capsys, str(tmp_path / "p.csv"), str(SHARED / "third_party_system_outputs_eval.csv"),
                             "--allow-missing")
    assert rc == 0 and res["n_clips"] == 30 and 0 < res["corpus"]["cider_d"] < 2, err
