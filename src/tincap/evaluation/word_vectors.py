"""One fixed word embedding per dataset, learned from its training captions, so cosine scores compare across models."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from tincap.evaluation.caption_metrics import Caption, Embedding, embedding_lookup


def caption_word_vectors(captions: Sequence[Caption], dim: int = 100, min_count: int = 5) -> Embedding:
    """PPMI-SVD word vectors (Levy & Goldberg 2014) of the words used at least `min_count` times, with the captions
    as contexts: words that appear in the same captions get near vectors. Deterministic: no sampling, no training.

    Returns a ``mean_cosine`` embedding: the (k, dim) vectors of the known words of a caption, or None.
    """
    counts = Counter(w for c in captions for w in c)
    words = sorted(w for w, n in counts.items() if n >= min_count)
    if len(words) < 2:
        raise ValueError(f"too few words used {min_count}+ times in {len(captions)} captions for word vectors")
    index = {w: i for i, w in enumerate(words)}
    together = np.zeros((len(words), len(words)))
    for caption in captions:
        ids = sorted({index[w] for w in caption if w in index})
        for i in ids:
            together[i, ids] += 1.0
    np.fill_diagonal(together, 0.0)
    total = together.sum()
    marginal = together.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(together * total / np.outer(marginal, marginal))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
    values, vectors = np.linalg.eigh(ppmi)  # symmetric: its eigenvectors are its singular vectors
    top = np.argsort(values)[::-1][: min(dim, len(words))]
    top = top[values[top] > 0]
    table = vectors[:, top] * np.sqrt(values[top])
    # one sign per component, fixed by its largest entry, so the table does not depend on the solver's choice
    table *= np.sign(table[np.abs(table).argmax(0), np.arange(table.shape[1])])
    return embedding_lookup(table, index)


