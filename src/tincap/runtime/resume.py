"""`python train.py resume=<run_dir>`: continue a run in its own directory, with its own saved config."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def _plain(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


def conflicting_overrides(overrides: list[str], given: DictConfig, saved: DictConfig,
                          given_choices: dict[str, Any], saved_choices: dict[str, Any]) -> list[str]:
    """Command-line overrides (besides resume) that would change the saved run's config or config-group choices."""
    conflicts = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume":
            continue
        if key in given_choices or key in saved_choices:
            same = given_choices.get(key) == saved_choices.get(key)
        else:
            same = _plain(given, key) == _plain(saved, key)
        if not same:
            conflicts.append(override.input_line)
    return conflicts


class ResumeInPlace(HydraCallback):
    """`resume=<run_dir>`: run in that directory with its saved config, keeping its original `.hydra/` record.

    Errors are raised as SystemExit: Hydra turns a callback's ordinary exceptions into warnings and would go on.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("resume"):
            return
        run_dir = Path(str(config.resume)).expanduser().resolve()
        saved_path = run_dir / ".hydra" / "config.yaml"
        if not saved_path.is_file():
            raise SystemExit(f"Error: resume={config.resume}: {saved_path} not found; expected the directory of a "
                             "tincap training run (with .hydra/config.yaml and checkpoints/last.ckpt)")
        saved = OmegaConf.load(saved_path)
        hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
        saved_choices = dict(OmegaConf.load(hydra_yaml).hydra.runtime.choices) if hydra_yaml.is_file() else {}
        conflicts = conflicting_overrides(list(config.hydra.overrides.task), config, saved,
                                          dict(config.hydra.runtime.choices), saved_choices)
        if conflicts:
            raise SystemExit(f"Error: resume={config.resume} continues the run with its saved config ({saved_path}); "
                             f"these overrides would change it: {conflicts}. Drop them, or start a new run.")
        with read_write(config), open_dict(config):
            for key in [k for k in config if k != "hydra"]:
                del config[key]
            for key, value in saved.items():
                config[key] = value
            config.resume = str(run_dir)
            config.hydra.run.dir = str(run_dir)
            if config.hydra.output_subdir is not None:  # DDP children pass null: they write no record
                stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
                config.hydra.output_subdir = f"{config.hydra.output_subdir}/resumed_{stamp}"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if any(o.split("=", 1)[0].lstrip("+") == "resume" for o in config.hydra.overrides.task):
            raise SystemExit("Error: resume=<run_dir> continues one run; run it without -m (once per run directory)")
