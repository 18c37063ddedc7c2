"""`logger=mlflow` and `logger=wandb` after real runs of train.py: a 2-job sweep, and a run that crashed mid-epoch and
was resumed, read back from the MLflow store (MlflowClient) and the offline W&B runs (wandb's reader, `wandb leet`).

The runs go through train.py in this process (Hydra, its callbacks, the task wrapper: all as on the command line) so
that torch, Lightning and the trackers are imported once, not once a run."""

from __future__ import annotations

import csv
import json
import logging
import os
import runpy
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from scripts import REPO

from tincap.commands.train import train
from tincap.runtime.entry import user_message
from tincap.runtime.trackers import RUNS_FILE

# one batch an epoch, two epochs, a 32-unit MLP: the smallest run that still has per-epoch history and a best epoch
TINY = ["data=shapes", "model=mlp", "model.hidden=[32]", "data.n_per_class=6", "data.image_size=32",
        "trainer.max_epochs=2", "trainer.precision=32", "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null", "callbacks.early_stopping=null"]
LRS = ("0.05", "0.1")
EPOCH_METRICS = ("val/acc", "val/loss", "train/loss", "train/acc")


class CrashMidEpoch(L.Callback):
    """Raises in the middle of epoch `epoch` of a fresh fit (never of a resumed one): a run that stopped on an error."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch:
            raise RuntimeError("crash in the middle of an epoch")


@contextmanager
def process_state() -> Iterator[None]:
    """Put back what an entry script changes in its process: argv, PROJECT_ROOT, Hydra's globals, logging handlers."""
    root = logging.getLogger()
    handlers, level, argv = root.handlers[:], root.level, sys.argv[:]
    saved_env = {k: os.environ.get(k) for k in ("PROJECT_ROOT", "HYDRA_FULL_ERROR")}
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.argv[:] = argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        GlobalHydra.instance().clear()


def train_py(*overrides: str) -> None:
    """`python train.py <overrides>`, run in this process; an error in the run propagates (HYDRA_FULL_ERROR=1)."""
    with process_state():
        os.environ["HYDRA_FULL_ERROR"] = "1"
        sys.argv[:] = [str(REPO / "train.py"), *overrides]
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One outputs folder for the module: every run below logs to its single mlflow.db."""
    return tmp_path_factory.mktemp("trackers")


@pytest.fixture(scope="module")
def client(outputs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")


def where(outputs: Path) -> list[str]:
    return [f"paths.log_dir={outputs}", f"paths.cache_dir={outputs / 'cache'}"]


@pytest.fixture(scope="module")
def sweep(outputs: Path) -> list[Path]:
    """`-m optimizer.lr=0.05,0.1` with CSV beside both trackers: the job directories, in job order."""
    train_py("-m", f"optimizer.lr={','.join(LRS)}", *TINY, "logger=[csv,mlflow,wandb]", *where(outputs))
    (sweep_dir,) = (outputs / "train" / "multiruns").iterdir()
    return [sweep_dir / str(n) for n in range(len(LRS))]


@pytest.fixture(scope="module")
def resumed(outputs: Path, client: MlflowClient, sweep: list[Path]) -> dict:
    """The sweep's first job again (lr 0.05), stopped by an error in its second epoch, then `resume=` to its end."""
    started = time.time()
    with pytest.raises(RuntimeError, match="crash in the middle"):
        train_py(*TINY, f"optimizer.lr={LRS[0]}", "task_name=resumed", "logger=[mlflow,wandb]", *where(outputs),
                 f"+callbacks.crash._target_={__name__}.CrashMidEpoch", "+callbacks.crash.epoch=1")
    (run_dir,) = (outputs / "resumed" / "runs").iterdir()
    before = json.loads((run_dir / RUNS_FILE).read_text())
    at_crash = {"status": client.get_run(before["mlflow"]).info.status,
                "val/acc": client.get_metric_history(before["mlflow"], "val/acc")}
    time.sleep(max(0.0, 1.1 - (time.time() - started)))  # W&B names offline folders by the second they start in
    train_py(f"resume={run_dir}")
    assert (run_dir / "metrics.json").is_file()
    return {"run_dir": run_dir, "ids_at_crash": before, "at_crash": at_crash}


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def csv_history(run_dir: Path, key: str) -> list[tuple[int, float]]:
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open())
    return sorted((int(r["step"]), float(r[key])) for r in rows if r.get(key))


def wandb_records(folder: Path) -> list[dict]:
    """The records of an offline W&B run, as wandb's own reader prints them."""
    out = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(folder)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def wandb_history(records: list[dict], key: str) -> list[tuple[int, float]]:
    items = [r["history"]["item"] for r in records if r["type"] == "history"]
    return sorted((i["trainer/global_step"], i[key]) for i in items if key in i)


def exit_code(records: list[dict]) -> int:
    (record,) = [r["exit"] for r in records if r["type"] == "exit"]
    return record.get("exit_code", 0)  # protobuf's JSON leaves zero out


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_sweep_logs_one_mlflow_run_per_job_with_its_params(sweep: list[Path], client: MlflowClient) -> None:
    experiment = client.get_experiment_by_name("train")  # task_name
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(sweep)
    by_dir = {r.data.tags["tincap.run_dir"]: r for r in runs}
    assert set(by_dir) == {str(job) for job in sweep}
    for job, lr in zip(sweep, LRS):
        mlflow_run = by_dir[str(job)]
        assert json.loads((job / RUNS_FILE).read_text())["mlflow"] == mlflow_run.info.run_id
        assert mlflow_run.info.run_name == f"{job.parent.name}/{job.name}"
        assert mlflow_run.info.status == "FINISHED"
        params = mlflow_run.data.params
        assert params["optimizer.lr"] == lr
        assert params["model.hidden"] == "32" and params["data.n_per_class"] == "6"
        assert params["task_name"] == "train" and params["seed"] == "42"


def test_mlflow_metrics_are_the_runs_own(sweep: list[Path], client: MlflowClient) -> None:
    """Every epoch's value as the CSV logger saw it; the last val/test values are those of metrics.json."""
    for job in sweep:
        run_id = json.loads((job / RUNS_FILE).read_text())["mlflow"]
        metrics = json.loads((job / "metrics.json").read_text())
        for key in EPOCH_METRICS:
            got = history(client, run_id, key)
            assert got == csv_history(job, key), key
            assert len(got) >= metrics["epochs"]
        latest = client.get_run(run_id).data.metrics
        for key in ("val/acc", "val/loss", "test/acc", "test/loss"):
            assert latest[key] == metrics[key], key


def test_mlflow_artifacts_hold_figures_files_and_the_best_checkpoint(sweep: list[Path], client: MlflowClient) -> None:
    for job in sweep:
        run_id = json.loads((job / RUNS_FILE).read_text())["mlflow"]
        names = {a.path for a in client.list_artifacts(run_id)}
        assert {"metrics.json", "config.yaml", "checkpoints", "figures"} <= names
        assert {a.path for a in client.list_artifacts(run_id, "figures/val")} == {
            "figures/val/confusion_matrix.png", "figures/val/roc.png"}
        (best,) = [p for p in (job / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
        assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == [f"checkpoints/{best.name}"]
        stored = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
        assert (stored / "checkpoints" / best.name).read_bytes() == best.read_bytes()
        assert (stored / "metrics.json").read_text() == (job / "metrics.json").read_text()


def test_wandb_writes_one_offline_run_per_job(sweep: list[Path]) -> None:
    assert len({json.loads((job / RUNS_FILE).read_text())["wandb"] for job in sweep}) == len(sweep)
    for job, lr in zip(sweep, LRS):
        (folder,) = offline_runs(job)
        wandb_id = json.loads((job / RUNS_FILE).read_text())["wandb"]
        assert folder.name.endswith(f"-{wandb_id}")
        records = wandb_records(folder)
        (started,) = [r["run"] for r in records if r["type"] == "run"]
        assert started["run_id"] == wandb_id and started["run_group"] == "train" and started["project"] == "tincap"
        config = {k: v for r in records if r["type"] == "config" for k, v in r["config"]["update"].items()}
        assert config["optimizer.lr"] == float(lr)
        for key in EPOCH_METRICS:
            assert wandb_history(records, key) == csv_history(job, key), key
        metrics = json.loads((job / "metrics.json").read_text())
        assert wandb_history(records, "test/acc")[-1][1] == metrics["test/acc"]
        assert exit_code(records) == 0
        assert any(r["type"] == "artifact" and r["artifact"]["name"] == f"model-{wandb_id}" for r in records)


def test_resume_logs_into_the_same_tracker_runs(resumed: dict, sweep: list[Path], client: MlflowClient) -> None:
    run_dir, ids = resumed["run_dir"], resumed["ids_at_crash"]
    assert json.loads((run_dir / RUNS_FILE).read_text()) == ids
    assert resumed["at_crash"]["status"] == "FAILED"
    assert [m.step for m in resumed["at_crash"]["val/acc"]] == [0]  # the epoch before the crash

    (only,) = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert only.info.run_id == ids["mlflow"] and only.info.status == "FINISHED"
    assert only.data.params["resume"] == "null"  # params keep the values the run started with
    uninterrupted = json.loads((sweep[0] / RUNS_FILE).read_text())["mlflow"]
    for key in EPOCH_METRICS:  # the epochs before and after the crash, as the uninterrupted job logged them
        assert history(client, ids["mlflow"], key) == history(client, uninterrupted, key), key

    crashed, continued = offline_runs(run_dir)  # the same W&B run, one offline folder per invocation
    assert crashed.name.endswith(f"-{ids['wandb']}") and continued.name.endswith(f"-{ids['wandb']}")
    records = [wandb_records(f) for f in (crashed, continued)]
    assert [exit_code(r) for r in records] == [1, 0]
    steps = [wandb_history(r, "val/acc") for r in records]
    assert steps[0] == history(client, ids["mlflow"], "val/acc")[:1]
    assert steps[0] + steps[1] == history(client, ids["mlflow"], "val/acc")


def test_missing_tracker_package_is_a_short_error(compose_train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As without mlflow installed: the run stops before the data is built, naming what to install."""
    cfg = compose_train("data=shapes", "logger=[tensorboard,mlflow]")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets where it is not installed
    with pytest.raises(Exception) as raised:
        train(cfg)
    assert user_message(raised.value) == ("logger=mlflow needs the 'mlflow' package, which is not installed: "
                                          "pip install -e '.[trackers]' (or drop mlflow from logger=...)")
    assert not (tmp_path / "cache").exists()
