"""Caption metrics: hand-worked BLEU/CIDEr-D/cosine values, agreement with torchmetrics (and coco-caption when
installed), the blind and nearest-neighbour baselines, and the blind caption on real Flickr8k captions."""

from __future__ import annotations

import csv
import math
import random
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import require_dataset
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from torchmetrics.functional.text import bleu_score

from tincap.data.caption_files import read_captions_file
from tincap.data.vocab import tokenize
from tincap.evaluation.caption_metrics import (
    CiderD,
    _BlindBleu,
    best_blind_caption,
    cider_d,
    corpus_bleu,
    diversity,
    embedding_lookup,
    mean_cosine,
    nearest_neighbour_captions,
)
from tincap.evaluation.caption_scoring import CaptionScorer
from tincap.evaluation.coco_caption import (
    JAVA_MISSING,
    meteor,
    meteor_unavailable,
    rouge_l,
)
from tincap.evaluation.word_vectors import caption_word_vectors


def toks(text: str) -> list[str]:
    return text.split()


def random_corpus(rng: random.Random, images: int) -> tuple[list[list[str]], list[list[list[str]]]]:
    # a 6-word vocabulary so that 3- and 4-gram matches actually happen
    vocab = list("abcdef")
    hyps = [[rng.choice(vocab) for _ in range(rng.randint(0, 10))] for _ in range(images)]
    refs = [
        [[rng.choice(vocab) for _ in range(rng.randint(1, 10))] for _ in range(rng.randint(1, 5))]
        for _ in range(images)
    ]
    return hyps, refs


def test_corpus_bleu_hand_worked() -> None:
    # image 1: hyp "the cat is on the mat" (6 words); refs "there is a cat on the mat" (7), "a cat is on the mat" (6)
    #   1-grams the,the,cat,is,on,mat: "the" clipped to 1 (max count in one ref) -> 5/6
    #   2-grams the-cat,cat-is,is-on,on-the,the-mat: all but the-cat in ref 2 -> 4/5
    #   3-grams: the-cat-is misses -> 3/4;  4-grams: the-cat-is-on misses -> 2/3;  closest ref length 6
    # image 2: hyp "a dog" (2); refs "a dog runs" (3), "the dog runs fast" (4)
    #   1-grams 2/2, 2-grams 1/1, no 3- or 4-grams; closest ref length 3
    # corpus: matches 7,5,3,2 over totals 8,6,4,3; c = 8 < r = 9 -> BP = exp(1 - 9/8) = 0.882497
    #   BLEU-4 = 0.882497 * (7/8 * 5/6 * 3/4 * 2/3) ** 0.25 = 0.882497 * (35/96) ** 0.25 = 0.882497 * 0.777055
    hyps = [toks("the cat is on the mat"), toks("a dog")]
    refs = [
        [toks("there is a cat on the mat"), toks("a cat is on the mat")],
        [toks("a dog runs"), toks("the dog runs fast")],
    ]
    bp = math.exp(1 - 9 / 8)
    p = [7 / 8, 5 / 6, 3 / 4, 2 / 3]
    expected = {f"bleu{k}": bp * math.prod(p[:k]) ** (1 / k) for k in range(1, 5)}
    got = corpus_bleu(hyps, refs)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got["bleu4"] == pytest.approx(0.685745, abs=1e-6)
    # image 1 alone: BP = 1 and BLEU-4 = (5/6 * 4/5 * 3/4 * 2/3) ** 0.25 = (1/3) ** 0.25, torchmetrics' doc example
    assert corpus_bleu(hyps[:1], refs[:1])["bleu4"] == pytest.approx((1 / 3) ** 0.25, abs=1e-12)
    assert corpus_bleu(hyps[:1], refs[:1])["bleu4"] == pytest.approx(0.7598, abs=1e-4)


def test_corpus_bleu_edge_cases() -> None:
    assert corpus_bleu([[]], [[toks("a b")]]) == {"bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0}
    # no 4-gram in the hypothesis -> BLEU-4 is 0, lower orders are not
    got = corpus_bleu([toks("a b c")], [[toks("a b c")]])
    assert got["bleu3"] == 1.0 and got["bleu4"] == 0.0
    assert list(corpus_bleu([toks("a b")], [[toks("a b")]], max_n=2)) == ["bleu1", "bleu2"]
    with pytest.raises(ValueError):
        corpus_bleu([toks("a")], [])
    with pytest.raises(ValueError):
        corpus_bleu([toks("a")], [[]])


def test_corpus_bleu_closest_length_tie_goes_to_shorter() -> None:
    # hyp has 5 words; refs of 6 and 4 words are equally close. The shorter (4) gives c > r, BP = 1, BLEU-1 = 1.
    # torchmetrics takes the first listed (6): BP = exp(1 - 6/5), so its score depends on the reference order.
    hyp, refs = toks("a b c d e"), [toks("a b c d e f"), toks("a b c d")]
    assert corpus_bleu([hyp], [refs])["bleu1"] == 1.0
    assert corpus_bleu([hyp], [refs[::-1]])["bleu1"] == 1.0
    tm = float(bleu_score([" ".join(hyp)], [[" ".join(r) for r in refs]], n_gram=1))
    assert tm == pytest.approx(math.exp(1 - 6 / 5), abs=1e-6)


def test_corpus_bleu_matches_torchmetrics_on_random_corpora() -> None:
    rng = random.Random(0)
    for _ in range(30):
        hyps, refs = random_corpus(rng, rng.randint(1, 12))
        ours = corpus_bleu(hyps, refs)
        # sorting references by length makes torchmetrics' first-closest tie rule pick the shorter, as ours does
        tm_refs = [[" ".join(r) for r in sorted(rs, key=len)] for rs in refs]
        for k in range(1, 5):
            tm = float(bleu_score([" ".join(h) for h in hyps], tm_refs, n_gram=k))
            assert ours[f"bleu{k}"] == pytest.approx(tm, abs=1e-6)  # torchmetrics accumulates in float32


def test_cider_d_hand_worked() -> None:
    # Two images with disjoint words, hypothesis = every reference: each n-gram is in 1 of 2 documents, so all
    # tf-idf weights are log(2) > 0, each n-gram cosine is 1 and the length penalty exp(0) = 1.
    # 4-word captions have 1..4-grams: 10 * mean(1, 1, 1, 1) = 10. 3-word ones have no 4-gram: 10 * 3/4 = 7.5.
    four = [toks("a b c d"), toks("e f g h")]
    mean, per_image = cider_d(four, [[c, c, c] for c in four])
    assert per_image == pytest.approx([10.0, 10.0], abs=1e-12) and mean == pytest.approx(10.0, abs=1e-12)
    three = [toks("a b c"), toks("e f g")]
    assert cider_d(three, [[c, c] for c in three])[1] == pytest.approx([7.5, 7.5], abs=1e-12)
    # a hypothesis sharing no word with its references scores 0 (image 2 is unaffected: df depends on refs only)
    mean, per_image = cider_d([toks("x y z w"), four[1]], [[four[0]] * 3, [four[1]] * 3])
    assert per_image == pytest.approx([0.0, 10.0], abs=1e-12) and mean == pytest.approx(5.0, abs=1e-12)
    # n-grams found in every image's references carry idf log(2/2) = 0 and add nothing
    assert cider_d([toks("a b"), toks("a b")], [[toks("a b")], [toks("a b")]])[0] == 0.0


def test_cider_d_length_penalty_and_clipping() -> None:
    # hypothesis "a a a a" vs reference "a b c d" in a 2-image corpus: the unigram weight of "a" (tf 4) is clipped
    # to the reference's (tf 1): cos_1 = (1 * w) * w / (4w * |ref_1|) with |ref_1| = 2w -> 1/8; no shared 2..4-gram.
    # Same length, so no length penalty: 10 * (1/8) / 4 = 0.3125.
    refs = [[toks("a b c d")], [toks("e f g h")]]
    assert cider_d([toks("a a a a"), toks("e f g h")], refs)[1][0] == pytest.approx(0.3125, abs=1e-12)
    # a correct prefix 2 words shorter: the penalty exp(-2**2 / (2 * 6**2)) multiplies every n-gram cosine
    short = cider_d([toks("a b"), toks("e f g h")], refs)[1][0]
    cosines = [math.sqrt(2 / 4), math.sqrt(1 / 3), 0.0, 0.0]  # shared n-grams among equal weights: sqrt(k / K)
    assert short == pytest.approx(10 * math.exp(-4 / 72) * sum(cosines) / 4, abs=1e-12)


def test_cider_d_matches_coco_caption_when_installed() -> None:
    cider_module = pytest.importorskip("pycocoevalcap.cider.cider")
    rng = random.Random(1)
    for _ in range(20):
        hyps, refs = random_corpus(rng, rng.randint(1, 12))
        mean, per_image = cider_d(hyps, refs)
        coco_mean, coco_per_image = cider_module.Cider().compute_score(
            {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)},
            {i: [" ".join(h)] for i, h in enumerate(hyps)},
        )
        assert mean == pytest.approx(coco_mean, abs=1e-12)
        assert per_image == pytest.approx(list(coco_per_image), abs=1e-12)


def flickr8k_dev_corpus(images: int) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Real captions, tokenised as tincap tokenises: each of the first dev images' first caption as the hypothesis,
    its other four as the references."""
    root = require_dataset("flickr8k")
    names = (root / "Flickr_8k.devImages.txt").read_text().split()[:images]
    by_image: dict[str, list[list[str]]] = {n: [] for n in names}
    for record in read_captions_file(root / "captions.txt"):
        if record.image in by_image:
            by_image[record.image].append(tokenize(record.caption))
    return [by_image[n][0] for n in names], [by_image[n][1:] for n in names]


def test_rouge_l_and_meteor_equal_coco_caption_on_real_captions() -> None:
    """tincap's table on 300 real Flickr8k dev images equals coco-caption's (pycocoevalcap) on the same tokens; METEOR
    needs Java and says so where it is missing."""
    hyps, refs = flickr8k_dev_corpus(300)
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    assert rouge_l(hyps, refs) == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert 0.3 < rouge_l(hyps, refs) < 0.7  # a human caption against four others
    if shutil.which("java") is None:
        assert meteor_unavailable() == JAVA_MISSING
        pytest.skip(JAVA_MISSING)
    assert meteor_unavailable() is None
    score = meteor(hyps, refs)
    assert score == pytest.approx(Meteor().compute_score(gts, res)[0], abs=1e-12) and 0.1 < score < 0.5
    hyps[0] = []  # an empty caption scores 0 and does not stop the rest
    assert rouge_l(hyps, refs) < rouge_l(*flickr8k_dev_corpus(300))


def test_meteor_is_skipped_with_its_reason_where_no_java_is_found(tmp_path, monkeypatch) -> None:
    """A PATH without Java: the scorer still computes every other metric, and records why METEOR is missing."""
    hyps, refs = flickr8k_dev_corpus(100)
    scorer = CaptionScorer(refs)  # its word vectors need a real corpus
    monkeypatch.setenv("PATH", str(tmp_path))
    scores = scorer(hyps, refs, with_meteor=True)
    assert "meteor" not in scores and scorer.meteor_skipped == JAVA_MISSING
    assert scores["rouge_l"] > 0 and scores["bleu1"] > 0 and "cider" in scores


def test_cider_d_with_a_fixed_corpus() -> None:
    # SCST rewards: CIDEr-D against corpus image i's references, with the whole corpus's document frequencies
    corpus = [
        [toks("a b c d"), toks("a b c")],
        [toks("e f g h")],
        [toks("a b x y"), toks("a x y z")],
    ]
    scorer = CiderD(corpus)
    hyps = [toks("a b z z"), toks("e f g"), toks("a b c d"), toks("x y z"), toks("a b z z")]
    index = [0, 1, 0, 2, 0]  # repeats, as k samples of one image
    per_hyp = scorer.corpus_scores(hyps, index)
    assert per_hyp == scorer.scores(hyps, [corpus[i] for i in index])
    assert per_hyp[0] == per_hyp[4] and per_hyp[2] > per_hyp[0] > 0  # the second look-up reuses the vectors
    # over the whole corpus, in order, it is coco-caption's CIDEr-D of that corpus
    assert CiderD(corpus).corpus_scores(hyps[:3], [0, 1, 2]) == pytest.approx(cider_d(hyps[:3], corpus)[1], abs=1e-12)
    # the same hypotheses scored on their own references alone see other document frequencies ("a" and "b"
    # are in 2 of 3 corpus images but in 1 of 2 of these): the scores differ
    alone = cider_d([hyps[0], hyps[1]], [corpus[0], corpus[1]])[1]
    assert alone[0] != pytest.approx(per_hyp[0], abs=1e-6)
    # hand-worked: in the corpus "a b", "a c", "d e" the idf of "a" is log(3/2), of "b" log(3); hypothesis "a" for
    # image 0 has no bigram, so only the unigram cosine counts, times the length penalty exp(-(0 - 1)^2 / 72)
    small = CiderD([[toks("a b")], [toks("a c")], [toks("d e")]])
    cos_1 = math.log(1.5) / math.hypot(math.log(1.5), math.log(3))
    assert small.corpus_scores([toks("a")], [0]) == pytest.approx([10 * cos_1 * math.exp(-1 / 72) / 4], abs=1e-12)
    assert cider_d([toks("a")], [[toks("a b")]])[1] == [0.0]  # a one-image corpus: every idf is log(1) = 0
    # n-grams in every corpus image weigh nothing, so "a" scores 0 where it is in both
    assert CiderD([[toks("a b")], [toks("a c")]]).corpus_scores([toks("a")], [0]) == [0.0]
    # empty captions (an SCST sample that is just <eos>) score 0, not NaN
    assert scorer.corpus_scores([[], []], [0, 2]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="2 hypotheses but 1 image"):
        scorer.corpus_scores([toks("a"), toks("b")], [0])
    with pytest.raises(ValueError):
        CiderD([])


def test_diversity_hand_worked() -> None:
    hyps = [toks("a dog runs"), toks("a dog runs"), toks("a cat"), toks("a black dog runs fast")]
    training = [toks("a dog runs"), toks("two cats play")]
    got = diversity(hyps, iter(training))
    # 3 distinct captions; words a, dog, runs, cat, black, fast; "a dog runs" (twice) is a training caption, the
    # other 2 of 4 are new; lengths 3, 3, 2, 5
    assert got == {"distinct_captions": 3.0, "vocab_used": 6.0, "novel_ratio": 0.5, "mean_length": 13 / 4}
    assert diversity([[]], training) == {"distinct_captions": 1.0, "vocab_used": 0.0, "novel_ratio": 1.0,
                                         "mean_length": 0.0}
    with pytest.raises(ValueError):
        diversity([], training)


def topic_captions() -> list[list[str]]:
    """Three topics whose words appear together in captions, never with another topic's (but all with "the")."""
    topics = [["dog", "ball", "park"], ["cat", "mouse", "house"], ["car", "road", "city"]]
    return [["the", a, "and", "the", b] for t in topics for a in t for b in t if a != b] * 2


def _cos(lookup, a: str, b: str) -> float:
    u, v = lookup([a])[0], lookup([b])[0]
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_caption_word_vectors() -> None:
    captions = topic_captions()
    lookup = caption_word_vectors(captions, dim=10, min_count=5)
    again = caption_word_vectors(list(captions), dim=10, min_count=5)
    words = sorted({w for c in captions for w in c})
    np.testing.assert_array_equal(lookup(words), again(words))  # deterministic: the same table every build
    assert lookup(words).shape[1] <= 10
    # words of one topic share captions, words of two topics never do
    assert _cos(lookup, "dog", "ball") > _cos(lookup, "dog", "mouse") + 0.5
    assert _cos(lookup, "road", "city") > _cos(lookup, "road", "park") + 0.5
    # unknown words (and words used fewer than min_count times) are skipped
    np.testing.assert_array_equal(lookup(["dog", "zebra", "ball"]), lookup(["dog", "ball"]))
    assert lookup(["zebra"]) is None and lookup([]) is None
    rare = caption_word_vectors([*captions, ["dog", "unicorn"]], dim=10, min_count=5)
    assert rare(["unicorn"]) is None
    assert mean_cosine([toks("dog ball")], [[toks("ball dog")]], lookup) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="too few words"):
        caption_word_vectors([toks("a b c")] * 4, min_count=5)  # no word used 5 times
    with pytest.raises(ValueError, match="too few words"):
        caption_word_vectors([toks("a b"), toks("a c")] * 3, min_count=5)  # only "a"


def test_mean_cosine_hand_worked() -> None:
    stoi = {"<pad>": 0, "cat": 1, "dog": 2, "pet": 3}
    matrix = torch.tensor([[5.0, 5.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    embed = embedding_lookup(matrix, stoi, ignore=["<pad>"])
    # image 1: hyp "cat <pad> zebra" -> only cat -> [1, 0]
    #   ref "dog" -> [0, 1]: cos 0;  ref "pet cat" -> [1, 0.5]: cos 1 / sqrt(1.25);  image mean 0.5 / sqrt(1.25)
    #   ref "zebra" has no known word: cos 0, but still counts in the mean over 3 references
    # image 2: hyp "zebra" has no known word -> 0
    hyps = [["cat", "<pad>", "zebra"], ["zebra"]]
    refs = [[["dog"], ["pet", "cat"], ["zebra"]], [["cat"]]]
    expected = ((0.0 + 1 / math.sqrt(1.25) + 0.0) / 3 + 0.0) / 2
    assert mean_cosine(hyps, refs, embed) == pytest.approx(expected, abs=1e-12)
    assert mean_cosine([["dog", "pet"]], [[["pet", "dog"]]], embed) == pytest.approx(1.0, abs=1e-12)
    assert embed(["<pad>", "zebra"]) is None
    np.testing.assert_array_equal(embed(["pet", "x", "cat"]), [[1.0, 1.0], [1.0, 0.0]])


def small_blind_corpus() -> tuple[list[list[str]], list[list[list[str]]]]:
    # every image has "a dog runs on the grass" among otherwise unique references: it is the obvious blind answer
    rng = random.Random(2)
    words = [f"w{i}" for i in range(40)]
    refs = []
    for _ in range(8):
        noise = [[rng.choice(words) for _ in range(rng.randint(3, 9))] for _ in range(3)]
        refs.append([*noise[:2], toks("a dog runs on the grass"), noise[2]])
    return [c for rs in refs for c in rs], refs


def test_best_blind_caption_small_corpus() -> None:
    captions, refs = small_blind_corpus()
    caption, score = best_blind_caption(captions, refs)
    assert caption == toks("a dog runs on the grass")
    assert score == pytest.approx(corpus_bleu([caption] * len(refs), refs)["bleu4"], abs=1e-9)
    assert score == pytest.approx(1.0, abs=1e-12)  # every n-gram matches in every image, and BP = 1
    assert best_blind_caption(captions, refs, candidates=None)[0] == caption


def test_blind_scorer_equals_corpus_bleu_for_random_captions() -> None:
    rng = random.Random(3)
    _, refs = random_corpus(rng, 25)
    scorer = _BlindBleu(refs)
    for _ in range(40):
        caption = random_corpus(rng, 1)[0][0]
        expected = corpus_bleu([caption] * len(refs), refs)
        for k in range(1, 5):
            assert scorer.score(caption, n=k) == pytest.approx(expected[f"bleu{k}"], abs=1e-9)


def test_nearest_neighbour_captions() -> None:
    train = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    captions = [
        [toks("a red car"), toks("a red car on a road"), toks("a car on a road"), toks("the car on a road")],
        [toks("two dogs")],
        [toks("a cat"), toks("a cat sleeps")],
    ]
    query = np.array([[0.1, 3.0, 0.2], [5.0, 0.5, 0.0], [0.0, 0.1, 1.0], [2.0, 0.0, 0.1]])
    first = nearest_neighbour_captions(train, captions, query, consensus=False, batch_size=3)
    assert first == [toks("two dogs"), toks("a red car"), toks("a cat"), toks("a red car")]
    # "a car on a road" shares the most n-grams with the other three captions of image 0
    cons = nearest_neighbour_captions(torch.from_numpy(train), captions, torch.from_numpy(query), batch_size=2)
    assert cons[1] == cons[3] == toks("a car on a road")
    assert cons[0] == toks("two dogs")
    with pytest.raises(ValueError):
        nearest_neighbour_captions(train, captions[:2], query)


def test_blind_caption_on_flickr8k_train() -> None:
    root = require_dataset("flickr8k")
    if not (root / "captions.txt").is_file() or not (root / "Flickr_8k.trainImages.txt").is_file():
        pytest.skip("flickr8k captions.txt / Flickr_8k.trainImages.txt not found")
    by_image: dict[str, list[list[str]]] = {}
    with open(root / "captions.txt", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_image.setdefault(row["image"], []).append(re.findall(r"[a-z0-9]+", row["caption"].lower()))
    train = [line.strip() for line in (root / "Flickr_8k.trainImages.txt").read_text().splitlines() if line.strip()]
    refs = [by_image[name] for name in train if name in by_image]
    assert len(refs) > 1000
    caption, score = best_blind_caption([c for rs in refs for c in rs], refs)
    assert 0.05 <= score <= 0.12
    assert score == pytest.approx(corpus_bleu([caption] * len(refs), refs)["bleu4"], abs=1e-9)
