"""`logger=mlflow` and `logger=wandb`: Lightning's loggers holding one tracker run per run directory (the same one
again on `resume=`), given the flat config as params and, at the end, tincap's figures and best checkpoint."""

from __future__ import annotations

import importlib.util
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from tincap.runtime.atomic import atomic_write_text
from tincap.runtime.errors import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

RUNS_FILE = "trackers.json"  # in the run directory: the tracker run of each tracker, which `resume=` logs into again
INSTALL = "pip install -e '.[trackers]'"


class TrackerNotInstalled(UserError, ModuleNotFoundError):
    """`logger=mlflow` or `logger=wandb` without that package installed."""


def require(package: str) -> None:
    """Stop before any work when the tracker's package is missing, with the command that installs it."""
    if importlib.util.find_spec(package) is None:
        raise TrackerNotInstalled(f"logger={package} needs the '{package}' package, which is not installed: "
                                  f"{INSTALL} (or drop {package} from logger=...)")


def recorded_run(run_dir: Path, tracker: str) -> str | None:
    """The id of the tracker run this run directory logged to before (None for a new run directory)."""
    path = run_dir / RUNS_FILE
    return json.loads(path.read_text()).get(tracker) if path.is_file() else None


def record_run(run_dir: Path, tracker: str, run_id: str) -> None:
    path = run_dir / RUNS_FILE
    runs = json.loads(path.read_text()) if path.is_file() else {}
    if runs.get(tracker) != run_id:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**runs, tracker: run_id}, indent=2) + "\n")


def run_label(run_dir: Path) -> str:
    """The run directory's name, with its sweep's for a sweep job (whose own name is only its number)."""
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.isdigit() else run_dir.name


class RunTracker(ABC):
    """What train.py hands every tracker besides Lightning's metrics: the config once, the outputs at the end."""

    @abstractmethod
    def log_config(self, params: dict[str, Any]) -> None:
        """The flat config (`optimizer.lr`: 0.05, ...), before fitting."""

    @abstractmethod
    def finish(self, figures: list[Path], best_ckpt: str | None, files: list[Path]) -> None:
        """The run's last records: the best checkpoint's figures (PNG files of the run directory, not drawn again), the
        checkpoint itself and, where the tracker keeps files, the run's small files; then the tracker run ends."""


class MLflowTracker(MLFlowLogger, RunTracker):
    """An MLflow run per run directory in `experiment_name`, named after the directory, tagged with its path."""

    def __init__(self, run_dir: str, experiment_name: str, tracking_uri: str, artifact_location: str | None = None,
                 log_checkpoint: bool = True) -> None:
        require("mlflow")
        self.run_dir = Path(run_dir)
        self.log_checkpoint = log_checkpoint
        self._resumed = recorded_run(self.run_dir, "mlflow")
        super().__init__(experiment_name=experiment_name, run_name=run_label(self.run_dir), tracking_uri=tracking_uri,
                         tags={"tincap.run_dir": str(self.run_dir.resolve())}, artifact_location=artifact_location,
                         run_id=self._resumed)

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        if self._initialized:
            return self._mlflow_client
        if self._resumed is not None and not self._run_active(self._resumed):
            log.warning("MLflow run %s of %s is not in %s (or was deleted): logging to a new run", self._resumed,
                        self.run_dir, self._tracking_uri)
            self._run_id = self._resumed = None
        client = super().experiment
        if self._resumed is not None:
            client.update_run(self._run_id, status="RUNNING")  # it was left FAILED or RUNNING (killed)
        else:
            record_run(self.run_dir, "mlflow", self._run_id)
        log.info("MLflow run %s (experiment %s); to browse it: mlflow ui --backend-store-uri %s", self._run_id,
                 self._experiment_name, self._tracking_uri)
        return client

    def _run_active(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self._mlflow_client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    @rank_zero_only
    def log_config(self, params: dict[str, Any]) -> None:
        """Params are write-once in MLflow: a resumed run keeps the values it started with (e.g. `resume` itself)."""
        logged = self.experiment.get_run(self.run_id).data.params
        new = {k: v for k, v in params.items() if k not in logged}
        if new:
            self.log_hyperparams(new)

    @rank_zero_only
    def finish(self, figures: list[Path], best_ckpt: str | None, files: list[Path]) -> None:
        client = self.experiment
        for path in figures:
            client.log_artifact(self.run_id, str(path), "figures/val")
        for path in files:
            client.log_artifact(self.run_id, str(path))
        if best_ckpt and self.log_checkpoint:
            client.log_artifact(self.run_id, best_ckpt, "checkpoints")
        client.set_terminated(self.run_id, "FINISHED")


class WandbTracker(WandbLogger, RunTracker):
    """A W&B run per run directory, written under it (`<run_dir>/wandb/`), offline unless `mode` says otherwise."""

    def __init__(self, run_dir: str, project: str, mode: str = "offline", group: str | None = None,
                 tags: list[str] | None = None, log_checkpoint: bool = True, **init_kwargs: Any) -> None:
        require("wandb")
        self.run_dir = Path(run_dir)
        self.log_checkpoint = log_checkpoint
        self._resumed = recorded_run(self.run_dir, "wandb")
        super().__init__(name=run_label(self.run_dir), save_dir=str(self.run_dir), id=self._resumed, project=project,
                         mode=mode, group=group, tags=list(tags) if tags else None, **init_kwargs)
        self._wandb_init.pop("anonymous", None)  # Lightning passes None, which wandb.init warns about

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            import wandb

            if wandb.run is not None:  # an earlier sweep job's run, unfinished after an error: never log into it
                wandb.finish(exit_code=1)
            self.run_dir.mkdir(parents=True, exist_ok=True)  # wandb.init refuses a missing dir
            run = super().experiment
            record_run(self.run_dir, "wandb", run.id)
            return run
        return self._experiment

    @rank_zero_only
    def log_config(self, params: dict[str, Any]) -> None:
        self.log_hyperparams(params)

    @rank_zero_only
    def finish(self, figures: list[Path], best_ckpt: str | None, files: list[Path]) -> None:
        import wandb

        run = self.experiment
        if figures:
            run.log({f"val/{path.stem}": wandb.Image(str(path)) for path in figures})
        if best_ckpt and self.log_checkpoint:
            artifact = wandb.Artifact(f"model-{run.id}", type="model")
            artifact.add_file(best_ckpt, policy="immutable")  # not copied: the file stays in the run directory
            run.log_artifact(artifact, aliases=["best"])
        run.finish()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "failed" and self._experiment is not None:
            self._experiment.finish(exit_code=1)
