"""ROUGE-L and METEOR as coco-caption computes them, by its own code (pycocoevalcap), on tincap's tokenised captions.

METEOR runs coco-caption's Java program (meteor-1.5.jar, shipped inside pycocoevalcap); where no Java runtime is found
it is skipped with a reason instead of failing the run.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence

from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from tincap.evaluation.caption_metrics import Caption, check_corpus

log = logging.getLogger(__name__)

JAVA_MISSING = ("METEOR skipped: no Java runtime on PATH (coco-caption's METEOR is a Java program); install one, "
                "e.g. apt-get install default-jre-headless")


def _coco_inputs(hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]]
                 ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """coco-caption's (gts, res): image id -> reference strings, and image id -> [the hypothesis string]."""
    check_corpus(hypotheses, references)
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    return gts, res


def rouge_l(hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]]) -> float:
    """Mean over images of ROUGE-L's F-measure (beta 1.2) against the image's references (Lin 2004; coco-caption)."""
    if not hypotheses:
        raise ValueError("ROUGE-L needs at least one image")
    gts, res = _coco_inputs(hypotheses, references)
    return float(Rouge().compute_score(gts, res)[0])


def meteor_unavailable() -> str | None:
    """Why METEOR cannot be computed here (one line), or None when it can."""
    return JAVA_MISSING if shutil.which("java") is None else None


def meteor(hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]]) -> float:
    """Corpus METEOR 1.5 (Denkowski & Lavie 2014) as coco-caption reports it; needs Java (`meteor_unavailable`)."""
    if not hypotheses:
        raise ValueError("METEOR needs at least one image")
    gts, res = _coco_inputs(hypotheses, references)
    scorer = Meteor()  # starts the Java process; deleting the scorer stops it
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        del scorer
