"""Self-critical sequence training (Rennie et al. 2017): sampled captions rewarded by CIDEr-D minus a baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from tincap.runtime.errors import InvalidInput


@dataclass(frozen=True)
class ScstSettings:
    """`task.scst`: the stage after cross-entropy training that optimises CIDEr-D directly."""

    epochs: int = 0  # 0: no SCST stage
    init_from: str | None = None  # a cross-entropy captioner checkpoint: the run is the SCST stage alone
    samples: int = 5  # captions per image and step
    candidates: Literal["sample", "beam"] = "sample"  # drawn from the decoder, or its `samples` likeliest (beam search)
    temperature: float = 1.0  # candidates=sample: draw from softmax(log p / temperature)
    baseline: Literal["greedy", "mean"] = "greedy"  # the greedy caption's reward, or the other samples' mean
    lr: float = 5.0e-5  # constant, for every parameter group
    ce_weight: float = 0.0  # > 0: plus this times the references' cross-entropy (mixed objective, Paulus et al. 2018)

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise InvalidInput(f"task.scst.epochs={self.epochs}: expected an integer >= 0 (0 switches SCST off)")
        if self.baseline not in ("greedy", "mean"):
            raise InvalidInput(f"task.scst.baseline={self.baseline}: expected greedy or mean")
        if self.candidates not in ("sample", "beam"):
            raise InvalidInput(f"task.scst.candidates={self.candidates}: expected sample or beam")
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise InvalidInput(f"task.scst.temperature={self.temperature}: expected a number > 0 (1: the decoder's own "
                               "distribution; lower: nearer greedy decoding)")
        if not isinstance(self.ce_weight, (int, float)) or self.ce_weight < 0:
            raise InvalidInput(f"task.scst.ce_weight={self.ce_weight}: expected a number >= 0 (0: SCST's loss alone)")
        least = 2 if self.baseline == "mean" else 1
        if not isinstance(self.samples, int) or self.samples < least:
            raise InvalidInput(f"task.scst.samples={self.samples}: expected an integer >= {least}"
                               + (" (baseline=mean compares each sample with the others)" if least == 2 else ""))
        if self.init_from is not None and self.epochs == 0:
            raise InvalidInput(f"task.scst.init_from={self.init_from} but task.scst.epochs=0; set task.scst.epochs "
                               "to the number of SCST epochs to run from that checkpoint")


def advantages(rewards: Tensor, greedy_rewards: Tensor | None) -> Tensor:
    """Reward minus baseline for samples (N, k): the greedy caption's reward (N,), or, when None, the mean reward of
    the image's other k - 1 samples (which keeps the estimate unbiased)."""
    if greedy_rewards is not None:
        return rewards - greedy_rewards.unsqueeze(1)
    k = rewards.size(1)
    others = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


def self_critical_loss(token_logps: Tensor, ids: Tensor, advantage: Tensor, pad_id: int = 0) -> Tensor:
    """-advantage * log p(token), averaged over every generated token (`<eos>` included, padding not).

    token_logps, ids: (N * k, L); advantage: (N * k,)."""
    mask = (ids != pad_id).to(token_logps.dtype)  # (N * k, L); a caption's first token always counts
    return -(advantage.detach().unsqueeze(1) * token_logps * mask).sum() / mask.sum().clamp(min=1.0)


