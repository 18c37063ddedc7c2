"""`budget=<duration>`: the speed measured in the training loop, the epochs and size it buys, the whole run within the
budget with its schedule run to the end, the refusal of a budget too small, and the recorded count that a run without
a budget, a resumed run and every DDP process repeat."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from scripts import REPO, closing, run

from tincap.budget.calibration import Speed, measure_speed
from tincap.budget.plan import (LOOP_STEP_S, OUTPUTS_S, STEP_ALLOWANCE, Workload, apply_size, budget_sizes, check_slurm_limit,
                                duration_text, most_epochs, parse_duration, predict, stage_epochs)
from tincap.commands.train import measured_run
from tincap.runtime.errors import InvalidInput

TESTS = Path(__file__).resolve().parent
# tiny but real: 30 classes x 6 generated images (120 train, 30 val, 30 test) at 32 px, one-cycle schedule
DATA = ("data=shapes", "data.n_per_class=6", "data.image_size=32", "data.batch_size=16", "callbacks.early_stopping=null",
        "scheduler=onecycle")
TINY = (*DATA, "model=mlp", "model.hidden=[64]")
COMPARED = ("val/acc", "val/loss", "test/acc", "test/loss", "epochs", "params")
# two sizes: the wide one asks for more epochs than any test budget buys, so the budget takes the narrow one, capped
SIZES = ("+budget_sizes.wide.min_epochs=100000", "+budget_sizes.wide.set.model.hidden=[96]",
         "+budget_sizes.narrow.max_epochs=3", "+budget_sizes.narrow.set.model.hidden=[48]")


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_durations_parse_and_bad_ones_name_the_key() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("2.5m") == 150 and parse_duration("1h") == 3600 and parse_duration("10min") == 600
    for bad in ("30", "half an hour", "0m", True, ""):
        with pytest.raises(InvalidInput, match="budget="):
            parse_duration(bad)
    assert duration_text(754) == "12 min 34 s" and duration_text(3720) == "1 h 2 min" and duration_text(45) == "45 s"


def test_prices_progressive_epochs_by_their_image_side() -> None:
    # 1 s a step at 16 px, 4 s at 32 px: a + b side^2 through both gives 2.25 s at 24 px
    speed = Speed(step_s={0: {16: 1.0, 32: 4.0}}, steps_per_epoch={0: 10}, eval_batch_s=0.5, fit_start_s=2.0,
                  checkpoint_s=0.4, epoch_gap_s=0.1, images_per_step=8)
    assert speed.step(0, 24) == pytest.approx(2.25)
    assert speed.img_per_s() == pytest.approx(2.0)  # at the full side
    work = Workload(steps_per_epoch=[10], val_batches=4, val_every=1, end_batches=6)
    sides = {0: 16, 1: 24, 2: 32}
    fit_s, end_s = predict(speed, work, lambda epoch, epochs: sides[epoch], [3])
    # start + sanity batch, 10 steps at 1, 2.25 and 4 s (with the long fit's allowance), a checkpoint and Lightning's
    # loops between epochs, 4 evaluation batches each
    assert fit_s == pytest.approx(2.0 + 0.5 + 10 * ((1 + 2.25 + 4) * STEP_ALLOWANCE + 3 * LOOP_STEP_S) + 3 * (0.4 + 0.1)
                                  + 3 * 4 * 0.5)
    assert end_s == pytest.approx(6 * 0.5 + OUTPUTS_S)
    assert most_epochs(lambda n: n <= 37) == 37 and most_epochs(lambda n: False) == 0
    assert stage_epochs(10, [8, 2]) == [10, 2] and stage_epochs(3, [8, 2]) == [3, 1] and stage_epochs(5, [5, 0]) == [5, 0]


def test_calibration_times_each_image_side_in_the_training_loop(compose_train, one_thread) -> None:
    cfg = compose_train(*DATA, "model=cnn", "model.widths=[8,16]", "data.progressive={min_size:16,ramp_start:0.3,ramp_end:0.8}")
    datamodule, task, validate = measured_run(cfg)
    speed = measure_speed(cfg.trainer, task, datamodule, validate)
    # the short fit trained at the smallest and the full side, each timed after its warm-up steps
    assert set(speed.step_s[0]) == {16, 32}
    assert all(t > 0 for t in speed.step_s[0].values())
    assert speed.steps_per_epoch == {0: len(datamodule.train_dataloader())} and speed.images_per_step == 16
    assert speed.eval_batch_s > 0 and speed.fit_start_s > 0 and speed.checkpoint_s > 0 and speed.epoch_gap_s > 0


def test_a_size_leaves_the_command_line_and_other_models_alone(compose_train) -> None:
    cfg = compose_train("experiment=tin30_cnn", "optimizer.weight_decay=0.002")
    (wide, half) = budget_sizes(cfg)
    assert apply_size(cfg, wide) == {"model.widths": [48, 96, 192, 384], "data.augment.mix_prob": 1.0}
    assert cfg.optimizer.weight_decay == 0.002 and cfg.budget_size == "wide" and cfg.model.widths == [48, 96, 192, 384]
    cfg = compose_train("experiment=tin30_cnn", "model=resnet")
    assert apply_size(cfg, half) == {"data.augment.mix_prob": 0.5, "optimizer.weight_decay": 5.0e-4}
    assert "widths" not in cfg.model


def test_refused_when_one_epoch_and_its_evaluation_do_not_fit(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "data=shapes", "budget=15s",
                           f"paths.log_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "budget=15s cannot hold one epoch plus the evaluation after it" in proc.stderr
    assert "one epoch of the network takes" in proc.stderr and "Traceback" not in proc.stderr
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    assert "cannot hold one epoch" in (run_dir / "FAILED").read_text()
    assert not list(run_dir.rglob("*.ckpt")) and not (run_dir / "budget.json").exists()


def test_refused_when_longer_than_the_slurm_job_has_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 600))
    with pytest.raises(InvalidInput, match=r"budget=30m is longer than the \d+ min \d+ s left of SLURM job 4242"):
        check_slurm_limit("30m", 1800)
    check_slurm_limit("5m", 300)


def test_budget_run_ends_within_it_with_its_schedule_at_the_end(tmp_path: Path) -> None:
    budget = 30
    proc = run("train.py", *TINY, f"budget={budget}s", f"paths.log_dir={tmp_path}")
    run_dir = Path(closing(proc)["Run dir"])
    metrics, plan = metrics_of(run_dir), json.loads((run_dir / "budget.json").read_text())
    epochs = plan["epochs"]["trainer.max_epochs"]
    assert metrics["epochs"] == metrics["budget/epochs"] == epochs and metrics["budget/cut_at_epoch"] is None
    assert metrics["wall_s"] <= budget and metrics["budget/predicted_s"] <= budget
    assert metrics["wall_s"] >= 0.5 * budget  # the tiny run's epochs are short: most of the budget is used
    # the one-cycle schedule was sized to those epochs and stepped to its very end
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    schedule, groups = ckpt["lr_schedulers"][0], ckpt["optimizer_states"][0]["param_groups"]
    assert schedule["total_steps"] == schedule["last_epoch"] == epochs * 7  # 126 training images, full batches of 16
    for group in groups:  # annealed down to onecycle's floor, initial / final_div_factor (1e4): the schedule's end
        assert group["lr"] < group["initial_lr"] / 1e3
    assert OmegaConf.load(run_dir / "config.yaml").trainer.max_epochs == epochs
    assert (run_dir / "config.yaml").read_text().startswith(f"# budget={budget}s chose trainer.max_epochs={epochs}")


def test_recorded_choice_reruns_exactly_and_a_resumed_run_keeps_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *DATA, "model=mlp", *SIZES, "budget=60s", f"paths.log_dir={tmp_path / 'k'}",
         "+callbacks.kill._target_=test_resume.KillMidEpoch", "+callbacks.kill.epoch=1"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    (run_dir,) = (tmp_path / "k" / "train" / "runs").iterdir()
    record = (run_dir / "budget.json").read_text()
    plan = json.loads(record)
    # the wide size could not reach its min_epochs; the narrow one was capped at its max_epochs
    assert plan["size"] == "narrow" and plan["epochs"] == {"trainer.max_epochs": 3}

    resumed = run("train.py", f"resume={run_dir}", env_extra={"PYTHONPATH": env["PYTHONPATH"]})
    assert "affords" not in resumed.stdout + resumed.stderr  # nothing measured again
    assert (run_dir / "budget.json").read_text() == record
    got = metrics_of(run_dir)
    assert got["epochs"] == 3 and got["budget/size"] == "narrow"

    # the same overrides without the budget, with the recorded count and size, train the same run exactly
    again = Path(closing(run("train.py", *DATA, "model=mlp", *SIZES, "budget=null", "trainer.max_epochs=3", "budget_size=narrow",
                             f"paths.log_dir={tmp_path / 'r'}"))["Run dir"])
    expected = metrics_of(again)
    for key in COMPARED:
        assert got[key] == expected[key], key
    assert OmegaConf.load(again / "config.yaml").model.hidden == [48]


def test_ddp_processes_train_the_count_rank_zero_chose(tmp_path: Path) -> None:
    proc = run("train.py", *DATA, "model=mlp", *SIZES, "budget=60s", "trainer=ddp", "trainer.devices=2",
               "trainer.accelerator=cpu", f"paths.log_dir={tmp_path}")
    run_dir = Path(closing(proc)["Run dir"])
    plan = json.loads((run_dir / "budget.json").read_text())
    epochs = plan["epochs"]["trainer.max_epochs"]
    assert plan["size"] == "narrow" and epochs == 3 and metrics_of(run_dir)["epochs"] == epochs
    # rank 1 applied rank 0's record rather than measuring
    rank1 = (run_dir / "train_ddp_process_1.log").read_text()
    assert f"budget=60s chose trainer.max_epochs={epochs} budget_size=narrow" in rank1 and "recorded in" in rank1
    assert "affords" not in rank1


def test_each_sweep_job_has_its_own_budget_and_the_report_shows_it(tmp_path: Path) -> None:
    budget = 20
    run("train.py", "-m", *TINY, f"budget={budget}s", "model.hidden=[32],[64]", f"paths.log_dir={tmp_path}")
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = [sweep / "0", sweep / "1"]
    for job in jobs:
        metrics = metrics_of(job)
        # each job's clock starts with the job: the second job was measured soon after its own start
        assert metrics["wall_s"] <= budget and metrics["budget/measured_at_s"] < budget / 2, job.name
    run("report.py", str(sweep))
    with open(sweep / "report.csv", newline="") as fh:
        rows = {row["run"]: row for row in csv.DictReader(fh)}
    for job in jobs:
        metrics = metrics_of(job)
        row = rows[job.name]
        assert row["budget"] == f"{budget}s" and int(row["budget/epochs"]) == metrics["budget/epochs"]
        assert row["machine"] == metrics["machine"] and ("bf16 native" in row["machine"] or "bf16 emulated" in row["machine"])
        assert float(row["wall_s"]) == metrics["wall_s"]


@pytest.mark.slow  # ~1 min: the captioner's two stages measured and fitted
def test_cross_entropy_and_scst_share_a_captioning_budget(tmp_path: Path) -> None:
    budget = 60
    proc = run("train.py", "experiment=shapes_attention", "data.shapes_per_class=8", "data.image_size=32",
               "model.widths=[16,32,64]", "task.decoder.embed_dim=32", "task.decoder.hidden_dim=32",
               "task.decoder.attention_dim=32", "task.embed_dim=32", "data.batch_size=32", "task.scst.epochs=2", "task.meteor=false", f"budget={budget}s", f"paths.log_dir={tmp_path}")
    run_dir = Path(closing(proc)["Run dir"])
    plan = json.loads((run_dir / "budget.json").read_text())
    first, scst = plan["epochs"]["trainer.max_epochs"], plan["epochs"]["task.scst.epochs"]
    # the experiment's 10 cross-entropy epochs to 2 of SCST, kept
    assert first >= 1 and scst >= 1 and scst == max(1, round(first * 2 / 10))
    metrics = metrics_of(run_dir)
    assert metrics["wall_s"] <= budget
    # both stages fitted: every planned epoch, or as many as the guard let run when the machine ran slower than measured
    cut = metrics["budget/cut_at_epoch"]
    assert metrics["epochs"] == first + scst if cut is None else first < metrics["epochs"] == cut + 1 <= first + scst
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.trainer.max_epochs == first and config.task.scst.epochs == scst
