"""What a user sees when something goes wrong: one paragraph and exit status 1 for their mistakes, a traceback for
bugs, a clean stop on a diverging loss, and nothing half-written when the disk fails."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from tincap.runtime.entry import FAILED_MARKER, Outcome, task_wrapper, user_message
from tincap.runtime.errors import InvalidInput, MissingInput, TrainingDiverged, UserError
from tincap.tasks.captioner import Captioner
from tincap.tasks.classifier import Classifier
from tincap.tasks.loading import load_task

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 1, one `Error:` paragraph naming what is asked, no traceback."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: "), proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in message, message
    return message


def failed_runs(logs: Path) -> list[Path]:
    return sorted(p.parent for p in logs.rglob(FAILED_MARKER))


# ---------------------------------------------------------------- the wrapper


def _cfg(tmp_path: Path):
    return OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "seed": 1})


def test_wrapper_prints_user_errors_and_keeps_tracebacks_of_bugs(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "run").mkdir()

    @task_wrapper
    def user_mistake(cfg):
        raise MissingInput("data.root=/nowhere: folder not found; set data.root=/path/to/data")

    with pytest.raises(SystemExit) as stop:
        user_mistake(_cfg(tmp_path))
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip().endswith("Error: data.root=/nowhere: folder not found; set data.root=/path/to/data")
    assert "data.root=/nowhere" in (tmp_path / "run" / FAILED_MARKER).read_text()

    @task_wrapper
    def bug(cfg):
        return {}["missing"]

    with pytest.raises(KeyError):
        bug(_cfg(tmp_path))

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingInput):
        user_mistake(_cfg(tmp_path))

    @task_wrapper
    def fine(cfg):
        return Outcome(lines=["all good"], value=3.0)

    monkeypatch.delenv("HYDRA_FULL_ERROR")
    assert fine(_cfg(tmp_path)) == 3.0
    assert not (tmp_path / "run" / FAILED_MARKER).exists()  # a run that now finished is no longer marked failed
    assert capsys.readouterr().out.strip().splitlines()[-2:] == ["all good", f"Run dir: {tmp_path / 'run'}"]


def test_user_errors_are_found_inside_hydra_instantiation_errors(tmp_path: Path) -> None:
    with pytest.raises(Exception) as caught:
        hydra.utils.instantiate({"_target_": "tincap.models.resnet.ResNet", "num_classes": 3, "depth": 7})
    assert not isinstance(caught.value, UserError)  # Hydra wrapped it
    assert user_message(caught.value) == "model.depth=7: expected one of [18, 34, 50]"
    disk = OSError(errno.ENOSPC, "No space left on device", "/out/metrics.json")
    assert "could not write /out/metrics.json: the disk is full" in user_message(disk)
    assert user_message(ValueError("a bug")) is None


# ---------------------------------------------------------------- user mistakes, as a user makes them


def test_missing_dataset_is_one_paragraph(tmp_path: Path) -> None:
    proc = run_script("train.py", "data=tin30", f"data.root={tmp_path / 'no_such_tin30'}", f"paths.log_dir={tmp_path}")
    assert_user_error(proc, "data.root", str(tmp_path / "no_such_tin30"))
    assert "Config (saved as" in proc.stdout  # the config still comes first
    assert len(failed_runs(tmp_path)) == 1


def in_process(compose_train, capsys, script: str, *overrides: str, config_name: str = "train") -> str:
    """An entry script's body as Hydra runs it (the wrapper included); returns the one-line message it printed."""
    import importlib

    cfg = compose_train(*overrides, config_name=config_name)
    with open_dict(cfg):
        del cfg["hydra"]  # as Hydra hands the config to the task function
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(f"tincap.commands.{script}").run(cfg)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_a_sweep_goes_on_past_a_job_with_a_user_error(tmp_path: Path) -> None:
    proc = run_script("train.py", "-m", "data.n_per_class=4", "model.widths=[8,16,32,64]", "trainer.max_epochs=1",
                      "data.image_size=8,32", f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Error: data.image_size=8: expected a side >= 16 pixels" in proc.stderr
    assert "Traceback" not in proc.stderr
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert (sweep / "0" / FAILED_MARKER).is_file() and not (sweep / "0" / "metrics.json").exists()
    assert (sweep / "1" / "metrics.json").is_file() and not (sweep / "1" / FAILED_MARKER).exists()
    report = subprocess.run([sys.executable, str(REPO / "report.py"), str(sweep)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert f"note: {sweep / '0'}: the run stopped early and is not in the table (data.image_size=8: expected" \
        in report.stdout


def test_impossible_configuration_is_refused_before_training(compose_train, capsys) -> None:
    message = in_process(compose_train, capsys, "train", "model=timm", "model.arch=vit_tiny_patch16_224",
                         "data.image_size=64", "data.n_per_class=2")
    assert message.startswith("Error: model vit_tiny_patch16_224 only takes 224x224 images, but data.image_size=64")
    assert "set data.image_size=224" in message


def test_no_validation_split_with_a_monitored_metric_is_refused(compose_train, capsys) -> None:
    message = in_process(compose_train, capsys, "train", "data.n_per_class=2", "data.val_ratio=0")
    assert message.startswith("Error: data.val_ratio=0 leaves ShapesData no validation images, so "
                              "optimized_metric=val/acc cannot be monitored")
    assert "set optimized_metric=null callbacks.early_stopping=null" in message
    message = in_process(compose_train, capsys, "train", "data.n_per_class=2", "data.val_ratio=0",
                         "optimized_metric=null")
    assert "no validation images, so callbacks.early_stopping cannot run." in message


def test_bad_ckpt_path_and_a_missing_one(compose_train, capsys, tmp_path: Path) -> None:
    message = in_process(compose_train, capsys, "eval", f"ckpt_path={tmp_path / 'nope.ckpt'}",
                         config_name="eval")
    assert message == f"Error: ckpt_path={tmp_path / 'nope.ckpt'}: file not found; expected a checkpoints/*.ckpt " \
                      "file of a python train.py run"
    message = in_process(compose_train, capsys, "predict", "images=.", config_name="predict")
    assert message == "Error: ckpt_path is required but not set (??? in its config); add ckpt_path=... to the command line"


def test_checkpoint_of_the_wrong_kind_and_unknown_images(tmp_path: Path) -> None:
    # a captioner checkpoint is known by its decoder's config (hyper-parameters), whatever else it holds
    captioner_like = tmp_path / "captioner.ckpt"
    decoder = {"_target_": "tincap.models.caption_decoders.AttentionDecoder", "embed_dim": 8}
    torch.save({"state_dict": {}, "hyper_parameters": {"decoder": decoder, "data_info": {"max_len": 20}}},
               captioner_like)
    with pytest.raises(InvalidInput, match=r"ckpt_path=.*captioner\.ckpt is a captioner checkpoint, but this command "
                                          r"needs a classifier checkpoint; use it with caption\.py"):
        load_task(captioner_like, Classifier)
    # one from before the vocabulary moved into the datamodule's state cannot decode: retrain, says the message
    old_captioner = tmp_path / "old_captioner.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"decoder": decoder, "model_cfg": {"_target_": "cnn"},
                                                       "data_info": {"vocab": {"itos": ["<pad>"]}}}}, old_captioner)
    with pytest.raises(InvalidInput, match=r"old_captioner\.ckpt is a captioner checkpoint from before the vocabulary "
                                          r"was kept in the datamodule's state; retrain it"):
        load_task(old_captioner, Captioner)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InvalidInput, match=r"ckpt_path=.*junk\.ckpt is not a readable torch file"):
        load_task(junk)
    from tincap.data.image_files import image_paths

    with pytest.raises(MissingInput, match=r"images=.*nowhere"):
        image_paths(tmp_path / "nowhere")


# ---------------------------------------------------------------- training that goes wrong


def test_a_diverging_run_stops_at_the_first_nan_and_keeps_the_last_good_checkpoint(compose_train, capsys) -> None:
    from tincap.commands.train import run

    # epoch 0 trains normally; the schedule then multiplies the learning rate by 1e9
    cfg = compose_train("data.n_per_class=8", "model.widths=[8,16,32,64]", "trainer.max_epochs=4",
                        "scheduler=step", "scheduler.step_epochs=1", "scheduler.gamma=1e9", "callbacks.early_stopping=null")
    with open_dict(cfg):
        del cfg["hydra"]  # as Hydra hands the config to the task function
    with pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "loss became nan at epoch 1" in message and "from optimizer.lr=0.05" in message, message
    assert "try optimizer.lr=0.005" in message
    run_dir = Path(cfg.paths.output_dir)
    assert "training stopped" in (run_dir / FAILED_MARKER).read_text()
    assert not (run_dir / "metrics.json").exists()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"{last} (saved after epoch 0)" in message
    task = load_task(last).eval()
    assert all(torch.isfinite(p).all() for p in task.state_dict().values())
    with torch.no_grad():
        assert torch.isfinite(task(torch.rand(2, 3, 64, 64))).all()


def test_training_loss_check_names_step_and_rate() -> None:
    from tincap.runtime.callbacks import StopOnNonFiniteLoss

    class Trainer:
        world_size, current_epoch, global_step, checkpoint_callback = 1, 3, 120, None
        optimizers = [torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)]

    StopOnNonFiniteLoss().on_before_backward(Trainer(), None, torch.tensor(1.5))  # finite: goes on
    with pytest.raises(TrainingDiverged, match=r"training loss became inf at epoch 3, step 120 \(learning rate 0.5"):
        StopOnNonFiniteLoss().on_before_backward(Trainer(), None, torch.tensor(float("inf")))
    # as on a GPU: no check per step (a host sync), the epoch's first non-finite loss is kept and stops at its end
    deferred = StopOnNonFiniteLoss(check_each_step=False)
    for loss in (1.5, float("nan"), float("inf"), 2.0):
        deferred.on_before_backward(Trainer(), None, torch.tensor(loss))
    with pytest.raises(TrainingDiverged, match=r"training loss became nan at epoch 3"):
        deferred.on_train_epoch_end(Trainer(), None)
    deferred.on_train_epoch_end(Trainer(), None)  # a new epoch starts clean


# ---------------------------------------------------------------- a full or read-only disk


@contextmanager
def tmpfs(path: Path, options: str):
    """A real small or read-only file system (needs mount rights, as root in CI; skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the patched-writer test covers it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_unwritable_output_folder_is_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        proc = run_script("train.py", f"paths.log_dir={ro}/outputs")
    assert_user_error(proc, f"cannot write the run directory {ro}/outputs", "read-only", "paths.log_dir=")


def test_full_disk_stops_with_the_path_and_keeps_earlier_checkpoints(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with tmpfs(tmp_path / "small", "size=1600k") as small:  # room for two 650 KB checkpoints, not three
        proc = run_script("train.py", "data.n_per_class=8", "model.widths=[8,16,32,64]", "trainer.max_epochs=6",
                          "callbacks.model_checkpoint.save_top_k=-1", "callbacks.early_stopping=null",
                          f"paths.log_dir={small}", f"paths.cache_dir={cache}")
        message = assert_user_error(proc, "the disk is full", "paths.log_dir=")
        run_dir = failed_runs(small)[0]
        ckpts = run_dir / "checkpoints"
        assert str(ckpts) in message
        assert not list(ckpts.glob(".*tmp*")), list(ckpts.iterdir())  # no half-written temp file left
        saved = sorted(ckpts.glob("epoch_*.ckpt"))
        assert saved and (ckpts / "last.ckpt").is_file()
        for ckpt in [*saved, ckpts / "last.ckpt"]:
            load_task(ckpt)  # every checkpoint left is whole
        assert "disk is full" in (run_dir / FAILED_MARKER).read_text()


def test_failed_writes_leave_old_files_whole(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC in the middle of a write (a patched writer): the old file stays, no temp file, the path is named."""
    from tincap.runtime import atomic
    from tincap.runtime.rundir import write_metrics

    target = tmp_path / "metrics.json"
    write_metrics(target, {"val/acc": 0.5})
    before = target.read_bytes()

    class FullDisk:
        def __init__(self, path, mode):
            self.fh = open(path, mode)  # noqa: SIM115

        def write(self, data):
            self.fh.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(atomic, "open", FullDisk, raising=False)
    with pytest.raises(OSError) as caught:
        write_metrics(target, {"val/acc": 0.9, "val/loss": 0.1})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert f"could not write {target}: the disk is full" in user_message(caught.value)


def test_a_cache_that_cannot_fit_is_refused_cleanly(tmp_path: Path) -> None:
    """HDF5 crashes the process on a full disk; the image cache checks the room it needs before writing."""
    import numpy as np

    from tincap.data.cache import cached_arrays

    arrays = {"images": np.zeros((64, 64, 64, 3), np.uint8)}  # 786 KB
    with tmpfs(tmp_path / "small", "size=512k") as small:
        target = small / "tin30_train.h5"
        with pytest.raises(OSError) as caught:
            cached_arrays(target, "key", lambda: arrays)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
        assert list(small.iterdir()) == []
        assert f"could not write {target}: the disk is full" in user_message(caught.value)
