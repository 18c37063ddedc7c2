"""The redesign of issue 32 changed names, not results: the same seed and config give the figures these runs gave on the
code before it (commit 1f5b5ae, 2026-12-07, fp32 on a 2-core Intel Xeon with AMX: the numbers below, to the digit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import closing, finish, start

CLASSIFIER = ("experiment=shapes_cnn", "data.n_per_class=20", "data.image_size=32", "data.batch_size=32",
              "trainer.max_epochs=3")
CAPTIONER = ("experiment=shapes_attention", "data.shapes_per_class=8", "data.image_size=32", "model.widths=[16,32,64]",
             "trainer.max_epochs=3")  # experiment=shapes_caption before the redesign
# (command-line overrides, with today's names) -> metrics.json of the same run before the redesign
BEFORE = {
    CLASSIFIER: {"val/acc": 0.23333333432674408, "val/loss": 1.8674399852752686,
                 "test/acc": 0.15000000596046448, "test/loss": 1.9228096008300781, "params": 1190206},
    CAPTIONER: {"val/bleu4": 0.13267479836940765, "val/cider": 0.7223663926124573,
                "test/bleu4": 0.22725962102413177, "test/cider": 0.81202632188797, "params": 74705},
}
# another CPU may sum in another order: a loss may move in its last digits, a score by about one image's worth
TOLERANCE = {"loss": dict(rel=1e-3), "acc": dict(abs=0.009), "bleu4": dict(rel=0.03), "cider": dict(rel=0.03)}


def differences(now: dict, before: dict) -> list[str]:
    """The metrics of `before` that `now` does not reproduce, named."""
    differ = []
    for key, value in before.items():
        within = TOLERANCE.get(key.rsplit("/", 1)[-1], {})
        if now.get(key) != pytest.approx(value, **within):
            differ.append(f"{key}: {now.get(key)} (before: {value})")
    return differ


def test_the_same_seed_and_config_give_the_figures_of_before_the_redesign(tmp_path: Path) -> None:
    started = {overrides: start("train.py", *overrides, "trainer.precision=32-true", f"paths.log_dir={tmp_path}",
                                f"paths.cache_dir={tmp_path / 'cache'}") for overrides in BEFORE}  # two at a time
    for overrides, proc in started.items():
        run_dir = Path(closing(finish(proc))["Run dir"])
        assert differences(json.loads((run_dir / "metrics.json").read_text()), BEFORE[overrides]) == [], overrides


def test_the_comparison_can_fail() -> None:
    """The same two runs with seed=1 instead of 42 (measured the same day) are out of tolerance on every metric."""
    seed_1 = {
        CLASSIFIER: {"val/acc": 0.19166666269302368, "val/loss": 3.3032190799713135,
                     "test/acc": 0.13333334028720856, "test/loss": 3.2363345623016357, "params": 1190206},
        CAPTIONER: {"val/bleu4": 0.1656443476676941, "val/cider": 0.7769699692726135,
                    "test/bleu4": 0.2034071981906891, "test/cider": 0.6212497353553772, "params": 74705},
    }
    for overrides, metrics in seed_1.items():
        assert len(differences(metrics, BEFORE[overrides])) == 4, overrides
