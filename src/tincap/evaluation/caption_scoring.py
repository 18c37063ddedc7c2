"""A captioner's output on a split, scored the same way for every model; its two baselines; its CSV file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from torch import Tensor

from tincap.evaluation.caption_metrics import (
    Caption,
    best_blind_caption,
    cider_d,
    corpus_bleu,
    diversity,
    mean_cosine,
    nearest_neighbour_captions,
)
from tincap.evaluation.coco_caption import meteor, meteor_unavailable, rouge_l
from tincap.evaluation.word_vectors import caption_word_vectors
from tincap.runtime.atomic import atomic_write_csv
from tincap.runtime.progress import progress

log = logging.getLogger(__name__)

# what every captioning run reports per split, beside the loss-free BLEU/CIDEr-D
DIVERSITY = ("distinct_captions", "vocab_used", "novel_ratio", "mean_length")


class CaptionScorer:
    """The captioning papers' table against the split's references (BLEU-1..4, ROUGE-L, CIDEr-D and, when asked and
    Java is here, METEOR), cosine in one word space fixed by the training captions (not a model's own embedding), and
    the diversity figures measured against those training captions."""

    def __init__(self, training_references: Sequence[Sequence[Caption]]) -> None:
        self.training_captions = [c for refs in training_references for c in refs]
        self.word_vectors = caption_word_vectors(self.training_captions)
        self.meteor_skipped: str | None = None  # why METEOR was asked for and not computed

    def __call__(self, hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]],
                 with_meteor: bool = False) -> dict[str, float]:
        scores = corpus_bleu(hypotheses, references)
        if with_meteor:
            self.meteor_skipped = meteor_unavailable()
            if self.meteor_skipped is None:
                scores["meteor"] = meteor(hypotheses, references)
            else:
                log.warning(self.meteor_skipped)
        scores["rouge_l"] = rouge_l(hypotheses, references)
        scores["cider"] = cider_d(hypotheses, references)[0]
        scores["cosine"] = mean_cosine(hypotheses, references, self.word_vectors)
        scores.update(diversity(hypotheses, self.training_captions))
        return scores


def baseline_scores(
    pooled_features: Callable[[Iterable[tuple[Tensor, Tensor]], Callable[[int], None]], Tensor],
    train_images: Iterable[tuple[Tensor, Tensor]],
    split_images: Iterable[tuple[Tensor, Tensor]],
    train_references: Sequence[Sequence[Caption]],
    references: Sequence[Sequence[Caption]],
    split: str,
) -> dict[str, float]:
    """BLEU-4 and CIDEr-D of two baselines built from the training split: the one training caption that scores best
    given to every image (blind), and the consensus caption of the nearest training image in the encoder's pooled
    feature space (nearest)."""
    train_captions = [c for caps in train_references for c in caps]
    candidates = len({tuple(c) for c in train_captions})
    total = len(train_references) + len(references) + candidates
    with progress(total, f"{split} caption baselines") as advance:
        nearest = nearest_neighbour_captions(pooled_features(train_images, advance), train_references,
                                             pooled_features(split_images, advance))
        blind, _ = best_blind_caption(train_captions, train_references, candidates=None, advance=advance)
    scores = {}
    for name, hyps in (("blind", [blind] * len(references)), ("nearest", nearest)):
        scores[f"{split}/baseline_{name}_bleu4"] = corpus_bleu(hyps, references)["bleu4"]
        scores[f"{split}/baseline_{name}_cider"] = cider_d(hyps, references)[0]
    log.info("%s blind caption: %r", split, " ".join(blind))
    return scores


def write_captions_csv(path: Path, names: Sequence[str], hypotheses: Sequence[Caption],
                       first_references: Sequence[str]) -> None:
    """One row per image: image, generated, reference (its first caption as written)."""
    rows = [[n, " ".join(h), r] for n, h, r in zip(names, hypotheses, first_references)]
    atomic_write_csv(path, ["image", "generated", "reference"], rows)
