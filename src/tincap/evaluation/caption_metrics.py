"""Caption metrics on tokenised captions: corpus BLEU, CIDEr-D, embedding cosine, and two caption baselines.

Every function takes already-tokenised captions: ``hypotheses`` is one token list per image and
``references`` is several token lists per image.

BLEU is computed here rather than with ``torchmetrics.functional.text.bleu_score`` because torchmetrics
breaks ties in the "closest reference length" by taking the first such reference in list order, so its
brevity penalty (and the score) depends on the order of the references; Papineni's reference
implementation, NLTK and coco-caption take the shorter one, as done here. Statistics are kept as exact
integers (torchmetrics accumulates float32), which also lets ``best_blind_caption`` reproduce
``corpus_bleu`` to the last bit. Apart from that tie rule the two agree (see the tests).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CiderD",
    "best_blind_caption",
    "cider_d",
    "corpus_bleu",
    "diversity",
    "embedding_lookup",
    "mean_cosine",
    "nearest_neighbour_captions",
]

Ngram = tuple[str, ...]
Caption = Sequence[str]
Embedding = Callable[[list[str]], np.ndarray | None]


def _ngram_counts(tokens: Caption, max_n: int) -> Counter[Ngram]:
    """All 1..max_n-gram occurrence counts of one caption, in a single Counter keyed by the n-gram tuple."""
    tokens = tuple(tokens)
    return Counter(tokens[i : i + n] for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


def _max_ref_counts(refs: Iterable[Caption], max_n: int) -> Counter[Ngram]:
    """Per n-gram, the largest count in any one reference: the clipping ceiling of modified precision."""
    ceiling: Counter[Ngram] = Counter()
    for ref in refs:
        ceiling |= _ngram_counts(ref, max_n)
    return ceiling


def _closest_ref_len(hyp_len: int, ref_lens: Iterable[int]) -> int:
    """Reference length closest to the hypothesis length; ties go to the shorter (Papineni/NLTK/coco-caption)."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def check_corpus(hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]]) -> None:
    """Every image needs exactly one hypothesis and at least one reference."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every image needs at least one reference caption")


def _bleu_from_stats(
    matches: Sequence[int],
    totals: Sequence[int],
    hyp_len: int,
    ref_len: int,
    n: int,
    smooth: bool = False,
) -> float:
    """BLEU-n from summed clipped matches / n-gram totals and lengths; shared so every path rounds identically.

    ``smooth`` adds one to numerator and denominator for n >= 2 (Lin & Och 2004, as torchmetrics' ``smooth``),
    which keeps sentence-level scores of short overlaps above zero.
    """
    if hyp_len == 0 or matches[0] == 0:
        return 0.0
    log_precision = 0.0
    for k in range(n):
        num, den = matches[k], totals[k]
        if smooth and k > 0:
            num, den = num + 1, den + 1
        if num == 0:
            return 0.0
        log_precision += math.log(num / den)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(log_precision / n)


def _bleu_stats(
    hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]], max_n: int
) -> tuple[list[int], list[int], int, int]:
    """Corpus sums of clipped n-gram matches, hypothesis n-gram totals, hypothesis length and closest ref length."""
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += _closest_ref_len(len(hyp), (len(r) for r in refs))
        ceiling = _max_ref_counts(refs, max_n)
        for gram, count in _ngram_counts(hyp, max_n).items():
            matches[len(gram) - 1] += min(count, ceiling[gram])
        for k in range(max_n):
            totals[k] += max(len(hyp) - k, 0)
    return matches, totals, hyp_len, ref_len


def corpus_bleu(
    hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]], max_n: int = 4
) -> dict[str, float]:
    """Corpus BLEU-1..max_n (Papineni et al. 2002): the standard captioning score, comparable across papers."""
    check_corpus(hypotheses, references)
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1; got {max_n}")
    matches, totals, hyp_len, ref_len = _bleu_stats(hypotheses, references, max_n)
    return {f"bleu{k}": _bleu_from_stats(matches, totals, hyp_len, ref_len, k) for k in range(1, max_n + 1)}


class CiderD:
    """CIDEr-D (Vedantam et al. 2015) exactly as coco-caption's CiderScorer, with the document frequencies of a fixed
    reference corpus: the evaluated one (`cider_d`), or the training set's for SCST rewards.

    As in coco-caption, the Gaussian length penalty compares the captions' bigram counts (the word-length difference,
    unless one caption is empty), hypothesis weights are clipped by the reference's, and the score is x10.
    """

    def __init__(self, corpus: Sequence[Sequence[Caption]], n: int = 4, sigma: float = 6.0) -> None:
        if not corpus:
            raise ValueError("CIDEr-D needs at least one image")
        self.n, self.sigma = n, sigma
        self.corpus = corpus
        self.doc_freq: Counter[Ngram] = Counter()
        for refs in corpus:
            self.doc_freq.update(set().union(*(_ngram_counts(ref, n) for ref in refs)))
        self.log_docs = math.log(len(corpus))
        self._corpus_vectors: dict[int, list[tuple[list[dict[Ngram, float]], list[float], int]]] = {}

    def _vector(self, tokens: Caption) -> tuple[list[dict[Ngram, float]], list[float], int]:
        """TF-IDF weights per n-gram order, their norms, and the caption's bigram count (the length penalty's unit)."""
        vec: list[dict[Ngram, float]] = [{} for _ in range(self.n)]
        for gram, tf in _ngram_counts(tokens, self.n).items():
            vec[len(gram) - 1][gram] = tf * (self.log_docs - math.log(max(1.0, self.doc_freq[gram])))
        return vec, [math.sqrt(sum(w * w for w in v.values())) for v in vec], max(len(tokens) - 1, 0)

    def _score(self, hyp: Caption, refs: Sequence[tuple[list[dict[Ngram, float]], list[float], int]]) -> float:
        hyp_vec, hyp_norm, hyp_bigrams = self._vector(hyp)
        per_n = [0.0] * self.n
        for ref_vec, ref_norm, ref_bigrams in refs:
            penalty = math.exp(-((hyp_bigrams - ref_bigrams) ** 2) / (2 * self.sigma**2))
            for k in range(self.n):
                # CIDEr-D clips the hypothesis weight by the reference weight (no gaming by repetition)
                dot = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, w in hyp_vec[k].items())
                if hyp_norm[k] != 0 and ref_norm[k] != 0:
                    dot /= hyp_norm[k] * ref_norm[k]
                per_n[k] += dot * penalty
        return 10.0 * sum(per_n) / self.n / len(refs)

    def scores(self, hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]]) -> list[float]:
        """Per-image CIDEr-D of each hypothesis against its own references."""
        check_corpus(hypotheses, references)
        return [self._score(hyp, [self._vector(r) for r in refs]) for hyp, refs in zip(hypotheses, references)]

    def corpus_scores(self, hypotheses: Sequence[Caption], images: Sequence[int]) -> list[float]:
        """CIDEr-D of each hypothesis against the references of corpus image `images[i]` (their vectors kept)."""
        if len(hypotheses) != len(images):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(images)} image indices")
        out = []
        for hyp, i in zip(hypotheses, images):
            if i not in self._corpus_vectors:
                self._corpus_vectors[i] = [self._vector(r) for r in self.corpus[i]]
            out.append(self._score(hyp, self._corpus_vectors[i]))
        return out


def cider_d(
    hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """CIDEr-D of a corpus as coco-caption reports it: (corpus mean, per-image scores), with the document
    frequencies of the evaluated references, so the score of one image depends on the rest of the corpus."""
    check_corpus(hypotheses, references)
    scores = CiderD(references, n, sigma).scores(hypotheses, references)
    return float(np.mean(scores)), scores


def diversity(hypotheses: Sequence[Caption], training_captions: Iterable[Caption]) -> dict[str, float]:
    """How varied a model's captions are: distinct captions (a count), distinct words used, the share of captions
    that are not word for word a training caption, and the mean length in words."""
    if not hypotheses:
        raise ValueError("diversity needs at least one caption")
    seen = {tuple(c) for c in training_captions}
    return {
        "distinct_captions": float(len({tuple(h) for h in hypotheses})),
        "vocab_used": float(len({w for h in hypotheses for w in h})),
        "novel_ratio": sum(tuple(h) not in seen for h in hypotheses) / len(hypotheses),
        "mean_length": sum(map(len, hypotheses)) / len(hypotheses),
    }


def _mean_vector(vectors: np.ndarray | None) -> np.ndarray | None:
    """Average of the word vectors of one caption, None when it has none."""
    if vectors is None:
        return None
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"embedding must return a (words, dim) array; got shape {vectors.shape}")
    return vectors.mean(axis=0) if len(vectors) else None


def _cosine(a: np.ndarray, b: np.ndarray | None) -> float:
    """Cosine similarity that is 0 (not NaN) when either side is missing or a zero vector."""
    if b is None:
        return 0.0
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else 0.0


def mean_cosine(
    hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]], embedding: Embedding
) -> float:
    """Coursework semantic score: mean over images of mean over refs of cos(avg hyp vector, avg ref vector).

    ``embedding(words)`` returns the (k, dim) vectors of the k words it knows (unknown words skipped) or None.
    An image whose hypothesis has no known word scores 0, and so does a reference with no known word.
    """
    check_corpus(hypotheses, references)
    if not hypotheses:
        raise ValueError("mean_cosine needs at least one image")
    scores = []
    for hyp, refs in zip(hypotheses, references):
        hyp_vec = _mean_vector(embedding(list(hyp)))
        if hyp_vec is None:
            scores.append(0.0)
            continue
        scores.append(float(np.mean([_cosine(hyp_vec, _mean_vector(embedding(list(ref)))) for ref in refs])))
    return float(np.mean(scores))


def embedding_lookup(
    matrix: np.ndarray | torch.Tensor, stoi: dict[str, int], ignore: Iterable[str] = ()
) -> Embedding:
    """Turn a (vocab, dim) embedding matrix (fixed word vectors, or the coursework's choice: a decoder's own learned
    embedding) into ``mean_cosine``'s input.

    Words missing from ``stoi`` or listed in ``ignore`` (e.g. ``<pad>``, ``<start>``, ``<end>``) are skipped.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    table = np.asarray(matrix, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"embedding matrix must be (vocab, dim); got shape {table.shape}")
    skip = frozenset(ignore)

    def lookup(words: list[str]) -> np.ndarray | None:
        rows = [stoi[w] for w in words if w in stoi and w not in skip]
        return table[rows] if rows else None

    return lookup


class _BlindBleu:
    """Corpus BLEU of one caption given to every image, from per-n-gram histograms of the clipping ceilings.

    Summed over images, the clipped count of an n-gram used c times is sum_k min(c, k) * (#images whose
    ceiling is k), which depends only on the n-gram and c; so scoring a candidate costs O(its n-grams),
    independent of the number of images, and equals ``corpus_bleu`` exactly (same integers, same formula).
    """

    def __init__(self, references: Sequence[Sequence[Caption]], max_n: int = 4) -> None:
        check_corpus([()] * len(references), references)
        if not references:
            raise ValueError("need at least one image")
        self.max_n = max_n
        self.images = len(references)
        self.ref_freq: Counter[Ngram] = Counter()
        ceiling_hist: dict[Ngram, Counter[int]] = {}
        for refs in references:
            ceiling: Counter[Ngram] = Counter()
            for ref in refs:
                counts = _ngram_counts(ref, max_n)
                self.ref_freq.update(counts)
                ceiling |= counts
            for gram, k in ceiling.items():
                ceiling_hist.setdefault(gram, Counter())[k] += 1
        self._hist = {gram: sorted(h.items()) for gram, h in ceiling_hist.items()}
        # padding with a huge length never wins the closest-length search for any real caption
        ref_lens = [sorted(len(r) for r in refs) for refs in references]
        width = max(len(lens) for lens in ref_lens)
        self._ref_lens = np.array([lens + [1 << 40] * (width - len(lens)) for lens in ref_lens], dtype=np.int64)
        self._closest_total: dict[int, int] = {}

    def closest_ref_total(self, hyp_len: int) -> int:
        """Sum over images of the closest reference length to a caption of this length (ties to the shorter)."""
        if hyp_len not in self._closest_total:
            # references are sorted ascending, so argmin's first-hit rule picks the shorter on ties
            idx = np.abs(self._ref_lens - hyp_len).argmin(axis=1)
            self._closest_total[hyp_len] = int(self._ref_lens[np.arange(self.images), idx].sum())
        return self._closest_total[hyp_len]

    def clipped_total(self, gram: Ngram, count: int) -> int:
        """Clipped matches of an n-gram used ``count`` times in the caption, summed over all images."""
        return sum(min(count, k) * images for k, images in self._hist.get(gram, ()))

    def score(self, caption: Caption, n: int | None = None) -> float:
        """Corpus BLEU-n (default max_n) with ``caption`` as the hypothesis for every image."""
        n = self.max_n if n is None else n
        matches = [0] * self.max_n
        for gram, count in _ngram_counts(caption, self.max_n).items():
            matches[len(gram) - 1] += self.clipped_total(gram, count)
        totals = [self.images * max(len(caption) - k, 0) for k in range(self.max_n)]
        hyp_len = self.images * len(caption)
        return _bleu_from_stats(matches, totals, hyp_len, self.closest_ref_total(len(caption)), n)


def best_blind_caption(
    train_captions: Sequence[Caption],
    train_references: Sequence[Sequence[Caption]],
    candidates: int | None = 300,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[list[str], float]:
    """Image-blind baseline: the one training caption with the best corpus BLEU-4 when given to every image.

    Candidates are the ``candidates`` distinct captions whose n-grams (1..4, with multiplicity) are most
    frequent over the references; ``None`` scores every distinct caption. Ties keep the more frequent one.
    """
    scorer = _BlindBleu(train_references, max_n=4)
    distinct = list(dict.fromkeys(tuple(c) for c in train_captions))
    if not distinct:
        raise ValueError("no training captions")
    popularity = {c: sum(scorer.ref_freq[g] * k for g, k in _ngram_counts(c, 4).items()) for c in distinct}
    ranked = sorted(distinct, key=lambda c: -popularity[c])
    pool = ranked if candidates is None else ranked[: max(candidates, 1)]
    scores = []
    for c in pool:
        scores.append(scorer.score(c))
        advance(1)
    best = int(np.argmax(scores))
    return list(pool[best]), scores[best]


def _consensus_caption(captions: Sequence[Caption]) -> Caption:
    """The caption with the highest mean smoothed sentence BLEU-4 against each other caption of the same image."""
    if len(captions) == 1:
        return captions[0]
    best, best_score = captions[0], -1.0
    for i, cap in enumerate(captions):
        scores = []
        for j, other in enumerate(captions):
            if j != i:
                matches, totals, hyp_len, ref_len = _bleu_stats([cap], [[other]], 4)
                scores.append(_bleu_from_stats(matches, totals, hyp_len, ref_len, 4, smooth=True))
        if np.mean(scores) > best_score:
            best, best_score = cap, float(np.mean(scores))
    return best


def nearest_neighbour_captions(
    train_features: np.ndarray | torch.Tensor,
    train_captions_per_image: Sequence[Sequence[Caption]],
    query_features: np.ndarray | torch.Tensor,
    consensus: bool = True,
    batch_size: int = 1024,
) -> list[list[str]]:
    """Retrieval baseline: caption each query with a caption of its most cosine-similar training image.

    With ``consensus`` (default) the caption is the training image's consensus caption (highest mean smoothed
    sentence BLEU-4 against its other captions, ties to the first); otherwise its first caption. A query that
    is itself a training image retrieves itself: drop it from ``train_features`` for leave-one-out use.
    """
    train = torch.as_tensor(train_features, dtype=torch.float32)
    query = torch.as_tensor(query_features, dtype=torch.float32, device=train.device)
    if train.ndim != 2 or query.ndim != 2 or train.shape[1] != query.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D; got {tuple(train.shape)} and {tuple(query.shape)}")
    if train.shape[0] != len(train_captions_per_image):
        raise ValueError(f"{train.shape[0]} training features but {len(train_captions_per_image)} caption sets")
    train = F.normalize(train, dim=1)
    nearest = []
    with torch.no_grad():
        for start in range(0, query.shape[0], batch_size):
            block = F.normalize(query[start : start + batch_size], dim=1)
            nearest.append((block @ train.T).argmax(dim=1).cpu())
    indices = torch.cat(nearest).tolist() if nearest else []
    chosen: dict[int, list[str]] = {}
    for i in set(indices):
        caps = train_captions_per_image[i]
        chosen[i] = list(_consensus_caption(caps) if consensus else caps[0])
    return [list(chosen[i]) for i in indices]
