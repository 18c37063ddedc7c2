"""Accuracy levers of the classifier: flip test-time augmentation, the weights' moving average, progressive resizing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from tincap.commands.eval import evaluate
from tincap.commands.train import train
from tincap.data.shapes import ShapesData
from tincap.data.transforms import ProgressiveResize
from tincap.models.cnn import CNN
from tincap.runtime.errors import InvalidInput
from tincap.tasks.classifier import Classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flip_tta_is_the_mean_of_image_and_mirror_logits() -> None:
    torch.manual_seed(0)
    task = Classifier(net=CNN(3, widths=(8, 16)), optimizer=None, tta="flip").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = task(x), task(x.flip(-1))
        assert not torch.allclose(plain, mirrored)  # the network is not mirror-symmetric, so TTA changes something
        torch.testing.assert_close(task.predict_logits(x), (plain + mirrored) / 2)
        task.use_tta("none")
        torch.testing.assert_close(task.predict_logits(x), plain)
        task.use_tta(None)  # keeps the current mode
        assert task.tta == "none"
    with pytest.raises(InvalidInput, match=r"task\.tta=hflip: expected one of none, flip"):
        Classifier(net=CNN(3, widths=(8, 16)), optimizer=None, tta="hflip")
    with pytest.raises(InvalidInput, match=r"^tta=mirror: expected one of none, flip"):
        task.use_tta("mirror")


def test_ema_weights_are_checkpointed_and_tested_and_tta_follows_the_checkpoint(compose_train) -> None:
    cfg = compose_train("data.n_per_class=12", "trainer.max_epochs=2", "model.widths=[16,32,64,128]",
                        "trainer.precision=32", "callbacks=[default,ema]", "callbacks.ema.decay=0.9", "task.tta=flip")
    metrics, _ = train(cfg)
    best = Path(cfg.paths.output_dir, "checkpoints")
    ckpt_path = next(p for p in best.glob("epoch_*.ckpt"))
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    # the state_dict is the average; the raw weights ride along for resuming
    raw, averaged = ckpt["current_model_state"], ckpt["state_dict"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in averaged if k.startswith("net."))
    assert ckpt["hyper_parameters"]["tta"] == "flip"

    def evaluate_with(*overrides: str) -> dict:
        eval_cfg = compose_train(f"ckpt_path={ckpt_path}", "trainer.precision=32", *overrides, config_name="eval")
        with open_dict(eval_cfg):
            eval_cfg.data = cfg.data  # the synthetic shapes, as trained
        return evaluate(eval_cfg)

    # train.py tested the best checkpoint's averaged weights with flip TTA, exactly as eval.py scores that file
    again = evaluate_with("split=test")
    assert again["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
    assert again["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-9)
    plain = evaluate_with("split=test", "task.tta=none")
    assert plain["test/loss"] != pytest.approx(metrics["test/loss"], abs=1e-6)
    # a TTA run also reports the accuracy without it, which is what task.tta=none scores
    assert metrics["test/acc_no_tta"] == pytest.approx(plain["test/acc"], abs=1e-9)
    assert "test/acc_no_tta" not in plain
    assert json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())["test/loss"] == pytest.approx(
        metrics["test/loss"])


def test_progressive_resize_schedule_and_refusals() -> None:
    grow = ProgressiveResize(min_size=32, ramp_start=0.3, ramp_end=0.8)
    # progress e/10: 32 until 0.3, then 32 + t * 32 rounded down to a multiple of 8, full from 0.8
    assert [grow.size(e, 10, 64) for e in range(10)] == [32, 32, 32, 32, 32, 40, 48, 56, 64, 64]
    x = torch.rand(2, 3, 64, 64)
    assert grow(x, 9, 10) is x
    small = grow(x, 0, 10)
    assert small.shape == (2, 3, 32, 32)
    torch.testing.assert_close(small.mean((2, 3)), x.mean((2, 3)), atol=1e-3, rtol=0)  # antialiased: same colours
    with pytest.raises(InvalidInput, match=r"data\.progressive\.min_size=4"):
        ProgressiveResize(min_size=4)
    with pytest.raises(InvalidInput, match=r"ramp_start=0\.9, ramp_end=0\.5"):
        ProgressiveResize(ramp_start=0.9, ramp_end=0.5)


class SizeRecorder(Classifier):
    """Records the side of every batch its steps receive, by stage and epoch."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[str, set[tuple[int, int]]] = {"train": set(), "val": set()}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen["train"].add((self.current_epoch, batch[0].shape[-1]))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.seen["val"].add((self.current_epoch, batch[0].shape[-1]))
        super().validation_step(batch, batch_idx)


def test_progressive_resize_shrinks_only_training_batches(cache_dir: Path) -> None:
    import lightning as L

    dm = ShapesData(n_per_class=6, image_size=32, batch_size=16, cache_dir=cache_dir,
                    progressive={"min_size": 16, "ramp_start": 0.25, "ramp_end": 0.75})
    task = SizeRecorder(net=CNN(dm.num_classes, widths=(8, 16)), optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    assert task.seen["train"] == {(0, 16), (1, 16), (2, 24), (3, 32)}
    assert task.seen["val"] == {(e, 32) for e in range(4)}


def test_progressive_resize_refuses_a_fixed_size_network(compose_train) -> None:
    cfg = compose_train("model=mlp", "data.progressive={min_size:16}", "data.n_per_class=4")
    with pytest.raises(InvalidInput, match=r"data\.progressive resizes training images, but model MLP only takes"):
        train(cfg)
