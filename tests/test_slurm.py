"""hydra/launcher=slurm against a real one-node SLURM cluster (tests/slurm_cluster.py): a sweep through sbatch, DDP
ranks from srun, and preempted jobs that requeue and resume in place. `make test-slurm` runs these."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from hydra.core.hydra_config import HydraConfig
from scripts import REPO, closing, run
from slurm_cluster import Cluster
from test_distributed import DDP, assert_same_per_class, metrics_of, per_class_table
from test_resume import COMPARED, CONFIG, tb_scalars

from tincap.runtime.atomic import atomic_write_text

pytestmark = pytest.mark.slurm
TESTS = Path(__file__).resolve().parent
# the test cluster's partition is not its default one, so a job lands there only if the key reaches sbatch
SLURM = ("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1")
# generated shapes, 30 classes x 6 images (120 train, 30 val, 30 test) at 32 px: each job trains in seconds
DATA = ("data=shapes", "data.n_per_class=6", "data.image_size=32", "data.batch_size=16")


def launcher(cluster: Cluster) -> tuple[str, ...]:
    return (*SLURM, f"hydra.launcher.partition={cluster.partition}")


def the_sweep(log_dir: Path) -> Path:
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep


def sacct(cluster: Cluster, job: str, fields: str = "JobID,Partition,State,ExitCode,AllocTRES,NTasks",
          duplicates: bool = False) -> list[dict[str, str]]:
    """sacct's lines for a job (its array tasks and steps too); with duplicates, also the runs before a requeue."""
    names = fields.split(",")
    out = cluster.command("sacct", "-n", "-P", "-j", job, f"--format={fields}", *(["-D"] if duplicates else []))
    return [dict(zip(names, line.split("|"))) for line in out.splitlines() if line]


def finished(cluster: Cluster, job: str, **kwargs) -> list[dict[str, str]]:
    """sacct's lines once the job has ended: the sweep returns when submitit has the result, slightly before SLURM
    marks the job (and its steps) done."""
    deadline = time.monotonic() + 60
    while True:
        lines = sacct(cluster, job, **kwargs)
        if all(r["State"] not in ("PENDING", "RUNNING", "COMPLETING") for r in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def job_ids(sweep: Path) -> list[str]:
    """The SLURM ids submitit gave the sweep's jobs (array tasks `<array>_<index>`, or one plain job id)."""
    return sorted(p.name for p in (sweep / ".submitit").iterdir() if list(p.glob("*_result.pkl")))


def closing_of_job(sweep: Path, job: str) -> dict[str, str]:
    """The closing line the job's rank 0 printed (Run dir, best checkpoint), from its submitit log."""
    out = (sweep / ".submitit" / job / f"{job}_0_log.out").read_text()
    (last,) = [line for line in out.splitlines() if line.startswith("Run dir: ")][-1:]
    return dict(re.findall(r"(Run dir|best checkpoint): (\S+)", last))


def test_sweep_submits_one_sbatch_job_per_combination(slurm: Cluster, tmp_path: Path) -> None:
    run("train.py", "-m", *launcher(slurm), "trainer=cpu", "model=cnn,mlp", *DATA, "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", env_extra=slurm.env)
    sweep = the_sweep(tmp_path)
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    text = script.read_text()
    assert f"#SBATCH --partition={slurm.partition}\n" in text and "#SBATCH --array=0-1%" in text
    assert "gpu" not in text and "gres" not in text  # a CPU trainer asks for no GPU
    jobs = job_ids(sweep)
    assert len(jobs) == 2
    for job in jobs:
        (line,) = [row for row in finished(slurm, job) if row["JobID"] == job]
        assert (line["Partition"], line["State"], line["ExitCode"]) == (slurm.partition, "COMPLETED", "0:0"), line
        assert "cpu=1" in line["AllocTRES"] and "gpu" not in line["AllocTRES"], line

    run("report.py", str(sweep))
    with open(sweep / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["run"], r["model"]) for r in rows) == [("0", "CNN"), ("1", "MLP")]  # the networks' classes


def test_ddp_job_takes_its_ranks_from_srun_and_evaluates_like_one_process(slurm: Cluster, tmp_path: Path) -> None:
    logs, cache = tmp_path / "logs", f"paths.cache_dir={tmp_path / 'cache'}"
    run("train.py", "-m", *launcher(slurm), *DDP, *DATA, "model=mlp", "model.hidden=[64]", "trainer.max_epochs=2",
        f"paths.log_dir={logs}", cache, env_extra=slurm.env)
    sweep = the_sweep(logs)
    (job,) = job_ids(sweep)
    steps = finished(slurm, job)
    assert [(s["JobID"], s["State"]) for s in steps] == [(job, "COMPLETED"), (f"{job}.batch", "COMPLETED"),
                                                         (f"{job}.0", "COMPLETED")]
    assert steps[2]["NTasks"] == "2"  # one srun step of two tasks: the two DDP processes
    for rank in (0, 1):
        said = "".join((sweep / ".submitit" / job / f"{job}_{rank}_log.{kind}").read_text() for kind in ("out", "err"))
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in said  # Lightning took the rank from SLURM_PROCID

    # one run directory and one metrics.json; rank 1 logged beside rank 0
    run_dir = sweep / "0"
    assert [p.parent for p in logs.rglob("metrics.json")] == [run_dir]
    assert (run_dir / "train_ddp_process_1.log").is_file()
    closing_line = closing_of_job(sweep, job)
    assert Path(closing_line["Run dir"]) == run_dir
    trained = metrics_of(run_dir)
    assert trained["epochs"] == 2 and "test/acc" in trained

    # the DDP run's own re-validation and per_class.csv equal one process evaluating its best checkpoint
    one_dir = Path(closing(run("eval.py", f"ckpt_path={closing_line['best checkpoint']}", "split=val", cache,
                               f"paths.log_dir={tmp_path / 'e1'}"))["Run dir"])
    one = metrics_of(one_dir)
    assert 0 < one["val/acc"] < 1
    assert trained["val/acc"] == one["val/acc"]
    assert trained["val/loss"] == pytest.approx(one["val/loss"], abs=1e-5)
    assert trained["val/auroc"] == pytest.approx(one["val/auroc"], abs=1e-6)
    assert_same_per_class(per_class_table(run_dir), per_class_table(one_dir))


class PauseForPreemption(L.Callback):
    """In the first run of the sweep jobs `jobs`, stops in the middle of epoch `epoch` and writes the SLURM job id to
    `folder/<job num>`, then waits there until SLURM preempts the job."""

    def __init__(self, folder: str, jobs: list[int], epoch: int = 1, batch: int = 2, wait_s: float = 300) -> None:
        self.folder, self.jobs, self.epoch, self.batch, self.wait_s = Path(folder), list(jobs), epoch, batch, wait_s

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        num = HydraConfig.get().job.num
        if (os.environ.get("SLURM_RESTART_COUNT") or trainer.ckpt_path or num not in self.jobs
                or (trainer.current_epoch, batch_idx) != (self.epoch, self.batch)):
            return
        array = os.environ.get("SLURM_ARRAY_JOB_ID")  # the id as submitit names it: <array>_<index>, or the job's
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        atomic_write_text(self.folder / str(num), job)
        deadline = time.monotonic() + self.wait_s
        while not trainer.received_sigterm:  # submitit's USR2 handler exits from inside this sleep
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {num} was not preempted within {self.wait_s:.0f} s")
            time.sleep(0.1)


def wait_for(what: str, ready, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended while waiting for {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_preempted_jobs_requeue_and_resume_to_the_uninterrupted_result(slurm: Cluster, tmp_path: Path) -> None:
    """Two jobs are preempted in the middle of epoch 2 of 3: one by the signal SLURM sends before a time limit
    (submitit's USR2: its checkpoint() hook requeues), one by `scontrol requeue` (SIGTERM, then SLURM requeues).
    Both resume from last.ckpt in their own run directory and end where the third, uninterrupted job ends."""
    markers = tmp_path / "markers"
    markers.mkdir()
    logs = tmp_path / "logs"
    env = {**os.environ, **slurm.env, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "-m", *launcher(slurm), "trainer=cpu", *CONFIG,
         "tags=[usr2],[requeue],[whole]", f"paths.log_dir={logs}", f"paths.cache_dir={tmp_path / 'cache'}",
         f"+callbacks.preempt._target_={__name__}.PauseForPreemption", f"+callbacks.preempt.folder={markers}",
         "+callbacks.preempt.jobs=[0,1]"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for("jobs 0 and 1 to reach epoch 2", lambda: len(list(markers.iterdir())) == 2, proc)
        by_signal, by_requeue = ((markers / n).read_text() for n in ("0", "1"))
        slurm.command("scancel", "--signal=USR2", by_signal)
        slurm.command("scontrol", "requeue", by_requeue)
        for job in (by_signal, by_requeue):
            # a requeued job waits for a BeginTime about two minutes ahead; let it start now
            wait_for(f"job {job} to be requeued",
                     lambda job=job: slurm.command("squeue", "-h", "-j", job, "-o", "%T").strip() == "PENDING", proc)
            slurm.command("scontrol", "update", f"JobId={job}", "StartTime=now")
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]

    sweep = the_sweep(logs)
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1", "2"]  # no other run dirs
    expected = metrics_of(sweep / "2")
    for num, job in (("0", by_signal), ("1", by_requeue)):
        run_dir = sweep / num
        got = metrics_of(run_dir)
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], abs=1e-6), (num, key)
        # sacct: the preempted run (REQUEUED), then the requeued run that completed
        runs = [r["State"] for r in finished(slurm, job, fields="JobID,State", duplicates=True) if "." not in r["JobID"]]
        assert runs == ["REQUEUED", "COMPLETED"], (num, runs)
        # the restart ran as resume=<run dir> (recorded beside the original record) from last.ckpt
        assert "resume=" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
        (record,) = (run_dir / ".hydra").glob("requeued_1_*/overrides.yaml")
        assert f"resume={run_dir}" in record.read_text()
        log = "".join((sweep / ".submitit" / job / f"{job}_0_log.{kind}").read_text()  # both runs append to it
                      for kind in ("out", "err"))
        assert f"resuming from {run_dir}/checkpoints/last.ckpt, after epoch" in log
        # one TensorBoard run holding the three epochs as the uninterrupted job logged them
        assert tb_scalars(run_dir / "tensorboard", "val/acc") == tb_scalars(sweep / "2" / "tensorboard", "val/acc")


def test_a_budget_longer_than_the_job_has_left_is_refused_and_a_shorter_one_kept(slurm: Cluster, tmp_path: Path) -> None:
    run("train.py", "-m", *launcher(slurm), "trainer=cpu", "model=mlp", *DATA, "budget=10m,40s",
        "hydra.launcher.timeout_min=5", f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
        env_extra=slurm.env)
    sweep = the_sweep(tmp_path)
    refused = (sweep / "0" / "FAILED").read_text()
    assert re.search(r"budget=10m is longer than the \d+ min \d+ s left of SLURM job \d+", refused), refused
    assert not (sweep / "0" / "metrics.json").exists()
    kept = metrics_of(sweep / "1")
    assert kept["budget"] == "40s" and kept["wall_s"] <= 40
