"Caption normalisation and the vocabulary: the defined edge cases, against the exported package."
import json

import pytest

from aacnb.text import Vocabulary, normalize_caption, tokenize


def test_punctuation_case_whitespace():
    assert normalize_caption("A Dog barks,  then\ta car passes.") == "a dog barks then a car passes"
    assert normalize_caption("walkie-talkie: static") == "walkie talkie static"


def test_apostrophes_join():
    assert normalize_caption("The dog's bowl") == "the dogs bowl"
    assert normalize_caption("don’t") == "dont"


def test_empty_and_whitespace_only():
    assert normalize_caption("") == "" and tokenize("") == []
    assert normalize_caption("  \n\t ") == "" and tokenize(" \n ") == []
    assert normalize_caption("...!!") == ""


def test_non_ascii():
    assert normalize_caption("Café NAÏVE résumé") == "cafe naive resume"
    assert normalize_caption("鳥 sings") == "鳥 sings"  # no ASCII fold: kept


def test_numbers():
    assert tokenize("2 dogs bark 3 times") == ["2", "dogs", "bark", "3", "times"]
    assert normalize_caption("3.5 seconds") == "3 5 seconds"


def test_non_string_is_clear_error():
    with pytest.raises(TypeError, match="must be a str"):
        normalize_caption(None)
    with pytest.raises(TypeError, match="NaN"):
        normalize_caption(float("nan"))


def test_vocabulary_specials_min_count_and_coding():
    caps = ["a dog barks", "a dog barks loudly", "a cat"]
    v = Vocabulary.build(caps, min_count=2)
    assert v.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "barks", "dog"]
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3) and len(v) == 7
    assert v.encode("A cat barks!") == [1, 4, 3, 5, 2]
    assert v.encode("A cat", add_special=False) == [4, 3]
    assert v.decode([1, 4, 6, 5, 2, 6, 0]) == "a dog barks"
    assert v.decode([4, 6, 0, 0]) == "a dog"
    assert Vocabulary.build(caps, min_count=1).stoi["loudly"] > 3


def test_vocabulary_deterministic_order():
    caps = ["b a", "a c", "c b"]
    assert Vocabulary.build(caps).itos == Vocabulary.build(list(reversed(caps))).itos


def test_vocabulary_json_round_trip(tmp_path):
    v = Vocabulary.build(["a dog barks", "rain on a roof"], min_count=1)
    p = v.save(tmp_path / "sub" / "vocab.json")
    assert json.loads(p.read_text())["itos"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    w = Vocabulary.load(p)
    assert w == v and w.stoi == v.stoi and w.min_count == 1
    assert [x.name for x in (tmp_path / "sub").iterdir()] == ["vocab.json"]  # no temp files left
    (tmp_path / "bad.json").write_text('{"words": []}')
    with pytest.raises(ValueError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")
