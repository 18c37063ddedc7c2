"""A .pth or .ckpt from the internet cannot run code when tincap loads it; tincap's own checkpoints hold no code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tincap.runtime.checkpoint_io import read_file, read_state_dict
from tincap.tasks.loading import load_task

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs `touch <marker>`, as a hostile download would run anything."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    """A state dict with a payload beside its tensors, and the file its payload would create."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "resnet18_finetuned.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "extra": Payload(marker)}, path)
    return path, marker


def test_the_payload_is_real(hostile: tuple[Path, Path]) -> None:
    """Full unpickling (what tincap did before) runs it: the refusal below is what keeps it from running."""
    path, marker = hostile
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"], check=True)
    assert marker.exists()


def test_hostile_weights_are_refused_without_running(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = hostile
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "model=resnet", f"init.weights_path={path}",
                           f"paths.log_dir={tmp_path / 'logs'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: init.weights_path={path} holds Python objects"), message
    assert "posix.system" in message and "refuses to unpickle" in message
    assert not marker.exists()


def test_hostile_checkpoints_are_refused_everywhere(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = hostile
    ckpt = tmp_path / "epoch_009.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model_cfg": Payload(marker)}}, ckpt)
    for load in (lambda: load_task(ckpt), lambda: read_state_dict(path), lambda: read_file(ckpt, "a checkpoint")):
        with pytest.raises(ValueError, match="refuses to unpickle"):
            load()
    assert not marker.exists()


def test_resuming_from_a_hostile_last_ckpt_is_refused(hostile: tuple[Path, Path], compose_train) -> None:
    """Lightning's own checkpoint reads (resume, re-validating the best checkpoint) go through the same reader."""
    import shutil

    from omegaconf import open_dict

    from tincap.commands.train import train

    path, marker = hostile
    cfg = compose_train("data.n_per_class=4", "model.widths=[8,16,32,64]", "trainer.max_epochs=1")
    run_dir = Path(cfg.paths.output_dir)
    (run_dir / "checkpoints").mkdir()
    shutil.copy(path, run_dir / "checkpoints" / "last.ckpt")
    with open_dict(cfg):
        cfg.resume = str(run_dir)
    with pytest.raises(ValueError, match=r"last\.ckpt holds Python objects .*refuses to unpickle"):
        train(cfg)
    assert not marker.exists()


def test_tincap_checkpoints_hold_only_tensors_and_plain_containers(compose_train) -> None:
    from tincap.commands.train import train

    cfg = compose_train("data.n_per_class=4", "model.widths=[8,16,32,64]", "trainer.max_epochs=1")
    metrics, objects = train(cfg)
    ckpts = sorted((Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt"))
    assert ckpts
    for ckpt in ckpts:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt) == []
        loaded = torch.load(ckpt, map_location="cpu", weights_only=True)  # no allow-list needed
        assert type(loaded["hyper_parameters"]["model_cfg"]) is dict
    task = load_task(objects["best_ckpt"]).eval()
    with torch.no_grad():
        x = torch.rand(3, 3, 64, 64)
        assert torch.allclose(task(x), objects["task"].eval()(x), atol=1e-5)

    # checkpoints of earlier tincap versions pickled OmegaConf containers: still read, still without full unpickling
    from omegaconf import OmegaConf

    legacy = Path(cfg.paths.output_dir) / "legacy.ckpt"
    saved = torch.load(objects["best_ckpt"], map_location="cpu", weights_only=True)
    torch.save({**saved, "hyper_parameters": OmegaConf.create(saved["hyper_parameters"])}, legacy)
    assert "omegaconf.dictconfig.DictConfig" in torch.serialization.get_unsafe_globals_in_checkpoint(legacy)
    with torch.no_grad():
        assert torch.equal(load_task(legacy).eval()(x), task(x))


def test_a_hostile_cifar_pickle_is_refused(tmp_path: Path) -> None:
    """CIFAR-10's python batches are pickles too: only numpy arrays, lists and strings may come out of them."""
    import pickle

    from tincap.data.cifar10 import CIFAR10
    from tincap.runtime.errors import InvalidInput

    marker = tmp_path / "PAYLOAD_RAN"
    batches = tmp_path / "cifar" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    with (batches / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": ["cat", "dog"], "num_cases_per_batch": Payload(marker)}, f)
    with pytest.raises(InvalidInput, match=r"batches\.meta: not a readable CIFAR-10 pickle .*posix\.system.*refuses"):
        CIFAR10(root=tmp_path / "cifar").class_names
    assert not marker.exists()
