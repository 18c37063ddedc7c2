"""Sweeps beyond a grid: the Optuna search records its best trial, and `experiment=glob(tin30_*)` is the whole study."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from scripts import run

from tincap.models import network_name

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

TINY = ["data=shapes", "model=mlp", "data.n_per_class=6", "data.image_size=32", "trainer.max_epochs=2",
        "trainer.precision=32", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def test_optuna_sweep_records_the_best_trial(tmp_path: Path) -> None:
    run("train.py", "-m", "hparams_search=tin30_optuna", "hydra.sweeper.n_trials=3", *TINY,
        f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    trials = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [t.name for t in trials] == ["0", "1", "2"]

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = {t.name: json.loads((t / "metrics.json").read_text())["val/acc"] for t in trials}
    assert results["best_value"] == max(values.values())
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout", "data.batch_size"}

    def sampled(trial: Path) -> dict:
        typed = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        return {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in typed) if k in results["best_params"]}

    best_trials = [t for t in trials if values[t.name] == results["best_value"]]
    assert results["best_params"] in [sampled(t) for t in best_trials]  # the recorded parameters are a best trial's
    assert 0.005 <= results["best_params"]["optimizer.lr"] <= 0.3


def test_experiment_glob_is_the_tin30_study() -> None:
    """The README's `-m 'experiment=glob(tin30_*)' task_name=tin30_study data=tin30 data.root=...`, composed only."""
    expected = sorted(p.stem for p in (CONF / "experiment").glob("tin30_*.yaml"))
    assert {"tin30_mlp", "tin30_cnn", "tin30_cnn_aug", "tin30_resnet18", "tin30_alexnet"} <= set(expected)
    common = ["task_name=tin30_study", "data=tin30", "data.root=/data/tinyimagenet30"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            (override,) = OverridesParser.create(config_loader=loader).parse_overrides(["experiment=glob(tin30_*)"])
            names = sorted(override.sweep_string_iterator())  # what the basic sweeper launches, one job each
            assert names == expected
            compose("train", overrides=common)  # the sweep's own config, composed before any experiment applies
            models = set()
            for name in names:
                cfg = compose("train", overrides=[f"experiment={name}", *common])
                assert cfg.data._target_ == "tincap.data.tin30.TinyImageNet30"
                assert cfg.data.root == "/data/tinyimagenet30"
                assert cfg.task_name == "tin30_study" and "tin30" in cfg.tags
                models.add(network_name(cfg.model))
            assert len(models) >= 4
    finally:
        GlobalHydra.instance().clear()
