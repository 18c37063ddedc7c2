"""`make bench`: loader and training-step throughput, each pair measured side by side; prints one JSON object a line.

Pairs: loader/hdf5 vs loader/imagefolder (same images, augmentations, workers, batch size), fit/tincap vs
fit/plain_loop (same model, data, batch size, precision), the precision/memory-format levers of one step, and
one training step of timm's tf_efficientnet_lite0 at 64/128/224 px beside the custom CNN's.
Never fails on a timing; uses ../shared/data/tinyimagenet30 (or $TINCAP_SHARED_DATA) and the generated shapes
when that is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tincap.callbacks import Throughput  # noqa: E402
from tincap.data.shapes import ShapesData  # noqa: E402
from tincap.data.tin30 import TinyImageNet30  # noqa: E402
from tincap.models.cnn import CNN  # noqa: E402
from tincap.tasks.classifier import Classifier  # noqa: E402

AUG = {"crop_padding": 4, "flip": True}


def emit(**record: object) -> None:
    print(json.dumps(record), flush=True)


def datamodule(args: argparse.Namespace) -> L.LightningDataModule:
    shared = Path(os.environ.get("TINCAP_SHARED_DATA", REPO.parent / "shared" / "data")) / "tinyimagenet30"
    common = {"batch_size": args.batch_size, "num_workers": args.workers, "augment": AUG,
              "cache_dir": REPO / ".cache"}
    if shared.is_dir():
        return TinyImageNet30(root=shared, **common)
    return ShapesData(n_per_class=200, **common)


def time_loader(loader: DataLoader, batches: int) -> float:
    """Images per second over `batches` batches, after one warm-up batch."""
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        n += len(x)
    return n / (time.perf_counter() - start)


def bench_loaders(dm: L.LightningDataModule, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    dm.setup()
    emit(name="cache/load", seconds=round(time.perf_counter() - start, 2), images=sum(len(s.images) for s in dm.splits.values()))
    hdf5 = time_loader(dm.train_dataloader(), args.loader_batches)
    if isinstance(dm, TinyImageNet30):
        folder = dm.root / "train_set" / "train_set"
        tf = transforms.Compose([transforms.RandomCrop(64, padding=4), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize(dm.mean, dm.std)])
        ds = datasets.ImageFolder(folder, transform=tf)
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True)
        ref = time_loader(loader, args.loader_batches)
        emit(name="loader/imagefolder", img_per_s=round(ref, 1), workers=args.workers)
    else:
        ref = None
    emit(name="loader/hdf5", img_per_s=round(hdf5, 1), workers=args.workers,
         speedup_vs_imagefolder=round(hdf5 / ref, 2) if ref else None)


def make_net(num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return CNN(num_classes, widths=(64, 128, 256, 512))


def bench_fit(dm: L.LightningDataModule, args: argparse.Namespace) -> None:
    steps = args.fit_steps
    # Lightning, as train.py runs it (bf16 autocast, channels_last, rich progress bar, metrics, throughput callback)
    task = Classifier(make_net(dm.num_classes), optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                      label_smoothing=0.1)
    meter = Throughput()
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=steps, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, callbacks=[meter], enable_model_summary=False)
    trainer.fit(task, train_dataloaders=dm.train_dataloader())
    tincap = meter.images / meter.busy

    # the same thing by hand
    net = make_net(dm.num_classes).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loader = dm.train_dataloader()
    it = iter(loader)
    n, busy, tick = 0, 0.0, time.perf_counter()
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        now = time.perf_counter()  # timed like Throughput: data loading + step, from the epoch start
        busy += now - tick
        n += len(x)
        tick = now
    plain = n / busy
    emit(name="fit/tincap", img_per_s=round(tincap, 1), steps=steps, batch_size=args.batch_size)
    emit(name="fit/plain_loop", img_per_s=round(plain, 1), steps=steps, batch_size=args.batch_size,
         tincap_ratio=round(tincap / plain, 3))


def step_img_per_s(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, bf16: bool = False,
                   channels_last: bool = False) -> float:
    """Images per second of SGD training steps on one fixed batch, after one warm-up step."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return len(x) * steps / (time.perf_counter() - start)


def bench_levers(num_classes: int, args: argparse.Namespace) -> None:
    """One training step of the tin30_cnn network under each precision / memory format."""
    x = torch.randn(args.batch_size, 3, 64, 64)
    y = torch.randint(0, num_classes, (args.batch_size,))
    results = {name: step_img_per_s(make_net(num_classes), x, y, args.lever_steps, bf16, cl)
               for name, bf16, cl in (("fp32", False, False), ("bf16", True, False), ("bf16_channels_last", True, True))}
    for name, value in results.items():
        emit(name=f"step/{name}", img_per_s=round(value, 1), speedup_vs_fp32=round(value / results["fp32"], 2))


def bench_timm(num_classes: int, args: argparse.Namespace) -> None:
    """One fp32 channels-last training step (the fine-tuning recipes' settings) of timm's tf_efficientnet_lite0 at
    64, 128 and 224 px, beside the custom tin30 CNN at 64 px, same batch size, measured in the same run."""
    from tincap.models.timm_backbone import TimmBackbone

    rows = [("step/cnn_64px", lambda: make_net(num_classes), 64)]
    rows += [(f"step/timm_tf_efficientnet_lite0_{s}px", lambda: TimmBackbone(num_classes, "tf_efficientnet_lite0"), s)
             for s in (64, 128, 224)]
    results = {}
    for name, build, size in rows:
        torch.manual_seed(0)
        x = torch.randn(args.timm_batch_size, 3, size, size)
        y = torch.randint(0, num_classes, (args.timm_batch_size,))
        results[name] = step_img_per_s(build(), x, y, args.lever_steps, channels_last=True)
    cnn = results["step/cnn_64px"]
    for name, value in results.items():
        emit(name=name, img_per_s=round(value, 1), batch_size=args.timm_batch_size, precision="fp32",
             channels_last=True, ratio_vs_cnn_64px=round(value / cnn, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--fit-steps", type=int, default=30)
    parser.add_argument("--lever-steps", type=int, default=5)
    parser.add_argument("--timm-batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny numbers of steps (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.loader_batches, args.fit_steps, args.lever_steps, args.batch_size = 3, 3, 1, 16
        args.timm_batch_size = 2
    torch.set_num_threads(os.cpu_count() or 1)
    dm = datamodule(args)
    bench_loaders(dm, args)
    bench_fit(dm, args)
    bench_levers(dm.num_classes, args)
    bench_timm(dm.num_classes, args)


if __name__ == "__main__":
    main()
