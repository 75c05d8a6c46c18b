"Fast CIDEr-D (aacnb.cider) against pycocoevalcap's CIDEr-D on generated captions."
import random
from collections import defaultdict

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from aacnb.cider import CiderD

WORDS = ("a the dog cat bird car rain wind water door man woman engine bell is are barks sings passes "
         "falls blows runs rings loudly softly in on by near distance background while and then again").split()


def _caption(rng, lo=0, hi=14):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _data(seed, clips=60, refs=(1, 5)):
    rng = random.Random(seed)
    preds = [_caption(rng) for _ in range(clips)]
    refs = [[_caption(rng, 1) for _ in range(rng.randint(*refs))] for _ in range(clips)]
    return preds, refs


def _pycoco(preds, refs):
    return Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [p] for i, p in enumerate(preds)})


class _FixedDfScorer(CiderScorer):
    "pycocoevalcap's algorithm with document frequencies and log N from a corpus (the SCST practice)."
    def __init__(self, corpus, **kw):
        super().__init__(**kw)
        self._df = defaultdict(float)
        for refs in corpus:
            for ng in {g for r in refs for g in _grams(r)}:
                self._df[ng] += 1
        self._n_docs = len(corpus)

    def compute_doc_freq(self):
        self.document_frequency = self._df

    def compute_cider(self):
        # the parent takes log N = log(len(self.crefs)); the corpus mode uses the corpus size instead
        batch = self.crefs
        try:
            self.crefs = _Len(batch, self._n_docs)
            return super().compute_cider()
        finally:
            self.crefs = batch


class _Len(list):
    "A list whose len() is the corpus size, so CiderScorer's log(len(crefs)) is log(N_corpus)."
    def __init__(self, items, n):
        super().__init__(items)
        self._n = n

    def __len__(self):
        return self._n


def _grams(sentence, n=4):
    w = sentence.split()
    return [tuple(w[i:i + k]) for k in range(1, n + 1) for i in range(len(w) - k + 1)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_mode_equals_pycocoevalcap(seed):
    preds, refs = _data(seed)
    ref_mean, ref_clip = _pycoco(preds, refs)
    mean, per_clip = CiderD().compute(preds, refs)
    assert per_clip.shape == (len(preds),)
    np.testing.assert_allclose(per_clip, ref_clip, atol=1e-6, rtol=0)
    assert abs(mean - ref_mean) < 1e-6


def test_quirks_match_pycocoevalcap():
    preds = ["dog dog dog dog", "", "rain", "a", "the the"]
    refs = [["a dog barks", "dog dog"], ["rain falls"], ["rain", "heavy rain falls"], ["a"], ["the"]]
    np.testing.assert_allclose(CiderD().compute(preds, refs)[1], _pycoco(preds, refs)[1], atol=1e-9)
    assert CiderD().compute(["a b"], [["a b"]])[0] == 0.0            # one clip: every weight is log(1) = 0


def test_corpus_mode_equals_pycocoevalcap_with_fixed_df():
    corpus_preds, corpus = _data(5, clips=80)
    scorer = CiderD(corpus_references=corpus)
    assert scorer.mode == "corpus"
    rng = random.Random(9)
    idx = [rng.randrange(len(corpus)) for _ in range(64)]              # a batch with repeated clips
    preds = [_caption(rng) for _ in idx]
    refs = [corpus[i] for i in idx]
    ref = _FixedDfScorer(corpus)
    for p, r in zip(preds, refs):
        ref += (p, r)
    ref.compute_doc_freq()
    expected = np.array(ref.compute_cider())
    _, fast = scorer.compute(preds, refs)                             # cached-reference path
    np.testing.assert_allclose(fast, expected, atol=1e-6, rtol=0)
    _, general = scorer.compute(preds, refs[:-1] + [refs[-1] + ["a new reference"]])
    np.testing.assert_allclose(general[:-1], expected[:-1], atol=1e-6, rtol=0)  # outside-corpus path


def test_corpus_mode_equals_batch_mode_on_its_own_corpus():
    preds, refs = _data(4, clips=40)
    np.testing.assert_allclose(CiderD(corpus_references=refs).compute(preds, refs)[1],
                               CiderD().compute(preds, refs)[1], atol=1e-12)


def test_corpus_mode_unknown_words_and_alias():
    corpus = [["a dog barks", "the dog is barking"], ["rain falls", "rain on a roof"], ["a bell rings"]]
    s1 = CiderD(references_corpus=corpus)
    m, per = s1.compute(["zebra zebra quacks", "rain falls on a roof"], [["zebra quacks"], corpus[1]])
    assert per.shape == (2,) and per[0] > 0 and np.isfinite(per).all()
    with pytest.raises(ValueError, match="not both"):
        CiderD(corpus_references=corpus, references_corpus=corpus)


def test_n_and_sigma():
    preds, refs = _data(3, clips=20)
    a = CiderD(n=2).compute(preds, refs)[1]
    b = CiderD(sigma=1.0).compute(preds, refs)[1]
    c = CiderD().compute(preds, refs)[1]
    assert not np.allclose(a, c) and not np.allclose(b, c)
    with pytest.raises(ValueError, match="n must be"):
        CiderD(n=0)


def test_bad_input():
    c = CiderD()
    with pytest.raises(ValueError, match="2 predictions but 1"):
        c.compute(["a", "b"], [["a"]])
    with pytest.raises(TypeError, match="prediction 1 is int"):
        c.compute(["a", 3], [["a"], ["b"]])
    with pytest.raises(TypeError, match=r"references\[0\]\[1\] is NoneType"):
        c.compute(["a"], [["a", None]])
    with pytest.raises(ValueError, match="empty"):
        c.compute(["a"], [[]])
    assert c.compute([], [])[1].shape == (0,)


def test_tokenize_hook():
    c = CiderD(tokenize=lambda s: s.lower().replace(",", " ").split())
    preds, refs = ["A Dog, barks", "rain"], [["a dog barks"], ["rain falls", "rain"]]
    np.testing.assert_allclose(c.compute(preds, refs)[1],
                               CiderD().compute(["a dog barks", "rain"], refs)[1], atol=1e-12)
