"""`make bench`: loader and training-step throughput, each pair measured side by side; prints one JSON object a line.

Pairs: loader/hdf5 vs loader/imagefolder (same images, augmentations, workers, batch size), fit/tincap vs
fit/plain_loop (same model, data, batch size, precision), the precision/memory-format levers of one step, and
one training step of timm's tf_efficientnet_lite0 at 64/128/224 px beside the custom CNN's.
Then `fit/tin30_epoch` (one epoch of experiment=tin30_cnn as train.py runs it), `eval/tta_flip` beside
`eval/plain` (the cost of flip test-time augmentation), `step/compiled` beside `step/fp32_channels_last`, and, when
CUDA is present, `gpu/loader` (img/s into device memory: host augmentation, device augmentation, data on the device),
`gpu/step` (bf16, with and without torch.compile) and `gpu/epoch`; and `decode/*`: captions/s of the attention LSTM and
the Transformer decoder side by side (beam 3 and greedy, batch 32), with the Transformer's greedy decoding recomputing
its prefix beside its cached one.
Stdout holds the JSON lines alone. Never fails on a timing; uses ../shared/data/tinyimagenet30 (or $TINCAP_SHARED_DATA) and the generated shapes
when that is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tincap.data.classification import ClassificationDataModule  # noqa: E402
from tincap.data.shapes import ShapesData  # noqa: E402
from tincap.data.tin30 import TinyImageNet30  # noqa: E402
from tincap.models.caption_search import beam_search, greedy_decode  # noqa: E402
from tincap.models.caption_transformer import TransformerDecoder  # noqa: E402
from tincap.models.cnn import CNN  # noqa: E402
from tincap.runtime.callbacks import Throughput  # noqa: E402
from tincap.tasks.classifier import Classifier  # noqa: E402

AUG = {"crop_padding": 4, "flip": True}


# stdout holds the JSON records alone (`make bench | jq` works); progress bars, tables and logs go to stderr
JSON_OUT = sys.stdout


def emit(**record: object) -> None:
    print(json.dumps(record), file=JSON_OUT, flush=True)


def json_only_stdout() -> None:
    """Keep the real stdout for `emit`, and send everything else written there (by Python or a library) to stderr."""
    global JSON_OUT
    sys.stdout.flush()
    JSON_OUT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)


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


def step_timing(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, bf16: bool = False,
                channels_last: bool = False, compile: bool = False) -> tuple[float, float]:
    """(images per second of SGD training steps on one fixed batch after one warm-up step, seconds of that warm-up
    step, which holds the compilation), on the batch's device."""
    device = x.device
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile:
        net.compile()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def synced() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    start = synced()
    step()
    warm = synced() - start
    start = synced()
    for _ in range(steps):
        step()
    return len(x) * steps / (synced() - start), warm


def step_img_per_s(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, bf16: bool = False,
                   channels_last: bool = False) -> float:
    """Images per second of SGD training steps on one fixed batch, after one warm-up step."""
    return step_timing(net, x, y, steps, bf16, channels_last)[0]


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


def compose_experiment(*overrides: str) -> Any:
    """conf/train.yaml composed as `python train.py <overrides>` would, writing into a temporary folder."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="tincap-bench-")
        cfg.paths.root_dir = str(REPO)
        cfg.test = False
        cfg.logger = None
    return cfg


def epoch_seconds(name: str, args: argparse.Namespace, *overrides: str) -> None:
    """One epoch of experiment=tin30_cnn through train.py's own `train`: training-step seconds, and the whole epoch's
    wall time with its validation (training seconds extrapolated to a full epoch when --epoch-steps limits the steps)."""
    from tincap.commands.train import train

    shared = Path(os.environ.get("TINCAP_SHARED_DATA", REPO.parent / "shared" / "data")) / "tinyimagenet30"
    if args.quick:  # a whole train.py run: not for a smoke run
        emit(name=name, skipped="--quick")
        return
    if not shared.is_dir():
        emit(name=name, skipped=f"no TinyImageNet30 at {shared}")
        return
    limit = [f"trainer.limit_train_batches={args.epoch_steps}"] if args.epoch_steps else []
    cfg = compose_experiment("experiment=tin30_cnn", f"data.root={shared}", "trainer.max_epochs=1",
                             "callbacks.model_checkpoint=null", "callbacks.rich_progress_bar=null",
                             "callbacks.lr_monitor=null", *limit, *overrides)
    _, objects = train(cfg)
    meter = next(c for c in objects["trainer"].callbacks if isinstance(c, Throughput))
    full = len(objects["datamodule"].splits["train"].images) // cfg.data.batch_size  # drop_last
    batches = args.epoch_steps or full
    emit(name=name, train_seconds=round(meter.busy * full / batches, 1), wall_s=round(meter.wall_s, 1),
         img_per_s=round(meter.img_per_s, 1), steps=batches, steps_per_epoch=full)


def bench_tta(dm: L.LightningDataModule, args: argparse.Namespace) -> None:
    """Evaluation speed of the tin30 CNN on the validation split without and with flip test-time augmentation."""
    task = Classifier(make_net(dm.num_classes), optimizer=None).eval()
    loader = dm.val_dataloader()
    results = {}
    for mode in ("none", "flip"):
        task.use_tta(mode)
        n, start = 0, time.perf_counter()
        with torch.no_grad():
            for i, (x, _) in enumerate(loader):
                if i == args.loader_batches:
                    break
                task.predict_logits(x)
                n += len(x)
        results[mode] = n / (time.perf_counter() - start)
    emit(name="eval/plain", img_per_s=round(results["none"], 1))
    emit(name="eval/tta_flip", img_per_s=round(results["flip"], 1), cost_vs_plain=round(results["none"] / results["flip"], 2))


def bench_compile(num_classes: int, args: argparse.Namespace, device: torch.device, prefix: str, bf16: bool) -> None:
    """One training step of the tin30 CNN with and without torch.compile (the first step holds the compilation)."""
    label = "bf16" if bf16 else "fp32"
    if args.quick:  # compiling takes a minute on a small CPU: not for a smoke run
        emit(name=f"{prefix}/compiled", skipped="--quick")
        return
    x = torch.randn(args.batch_size, 3, 64, 64, device=device)
    y = torch.randint(0, num_classes, (args.batch_size,), device=device)
    plain, _ = step_timing(make_net(num_classes), x, y, args.lever_steps, bf16, channels_last=True)
    compiled, warm = step_timing(make_net(num_classes), x, y, args.lever_steps, bf16, channels_last=True, compile=True)
    emit(name=f"{prefix}/{label}_channels_last", img_per_s=round(plain, 1))
    emit(name=f"{prefix}/compiled", img_per_s=round(compiled, 1), precision=label, first_step_s=round(warm, 1),
         speedup_vs_eager=round(compiled / plain, 2))


def loader_img_per_s(dm: ClassificationDataModule, device: torch.device, batches: int) -> float:
    """Training batches per second, as images, delivered augmented into `device` memory through the datamodule."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    it = iter(dm.train_dataloader())
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        batch = dm.on_after_batch_transfer(move_data_to_device(next(it), device), 0)
        n += len(batch[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def bench_device(args: argparse.Namespace, device: torch.device) -> None:
    """The GPU path: loader variants into device memory, bf16 steps with and without compile, one epoch."""
    prefix = "gpu" if device.type == "cuda" else f"{device.type}_as_device"
    shared = Path(os.environ.get("TINCAP_SHARED_DATA", REPO.parent / "shared" / "data")) / "tinyimagenet30"
    common = {"batch_size": args.batch_size, "augment": {**AUG, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 0.5},
              "cache_dir": REPO / ".cache", "pin_memory": device.type == "cuda"}
    rates = {}
    for mode, placement in (("host_augment", {}), ("device_augment", {"augment_on": "device"}),
                            ("data_on_device", {"augment_on": "device", "on_device": True})):
        dm = TinyImageNet30(root=shared, **common, **placement) if shared.is_dir() else ShapesData(**common, **placement)
        dm.trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False)
        dm.setup()
        rates[mode] = loader_img_per_s(dm, device, args.loader_batches)
    for mode, value in rates.items():
        emit(name=f"{prefix}/loader", mode=mode, img_per_s=round(value, 1),
             speedup_vs_host=round(value / rates["host_augment"], 2))
    bench_compile(30, args, device, f"{prefix}/step", bf16=True)
    if device.type == "cuda":
        epoch_seconds("gpu/epoch", args, "trainer=gpu", "data.augment_on=device", "data.on_device=true",
                      "trainer.compile=true")


def decoders(vocab: int, channels: int) -> dict[str, torch.nn.Module]:
    """The attention LSTM and the Transformer as flickr8k_attention_imagenet and flickr8k_transformer_imagenet
    build them (their experiments' task.decoder configs)."""
    from hydra.utils import instantiate

    return {name: instantiate(compose_experiment(f"experiment={experiment}", "data.root=unused").task.decoder,
                              vocab_size=vocab, input_dim=channels)
            for name, experiment in (("attention_lstm", "flickr8k_attention_imagenet"),
                                     ("transformer", "flickr8k_transformer_imagenet"))}


def greedy_recomputing(decoder: TransformerDecoder, image: torch.Tensor, max_len: int) -> torch.Tensor:
    """Greedy decoding without the cache: the whole prefix through the decoder again at every word."""
    tokens = torch.ones(image.size(0), 1, dtype=torch.long)  # <bos>
    for _ in range(max_len):
        logits = decoder(image, torch.cat([tokens, tokens[:, :1]], 1))[:, -1]  # (N, V): the last position's
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
    return tokens[:, 1:]


@torch.inference_mode()
def bench_decode(args: argparse.Namespace) -> None:
    """decode/<decoder>_beam3 and _greedy: captions/s over a batch of 7x7x1280 maps (EfficientNet-Lite0 at 224 px),
    fp32, every caption written to max_len (untrained weights rarely write <eos>), so both decoders take the same
    number of steps; and the Transformer's greedy decoding recomputing its prefix, beside the cached one."""
    torch.manual_seed(0)
    vocab, max_len, n = 3308, args.caption_len, args.decode_batch
    image = torch.randn(n, 49, 1280).relu()
    for name, decoder in decoders(vocab, 1280).items():
        decoder.eval()
        with torch.no_grad():
            decoder.fc.bias[2] = -1e4  # never <eos>: every caption is max_len words long
        runs = {"beam3": lambda d=decoder: beam_search(d, image, 3, max_len),
                "greedy": lambda d=decoder: greedy_decode(d, image, max_len)}
        if name == "transformer":
            runs["greedy_recomputing_prefix"] = lambda d=decoder: greedy_recomputing(d, image, max_len)
        for run, decode in runs.items():
            decode()  # warm-up
            started = time.perf_counter()
            decode()
            seconds = time.perf_counter() - started
            emit(name=f"decode/{name}_{run}", captions_per_s=round(n / seconds, 1), batch=n, words=max_len,
                 precision="32-true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--fit-steps", type=int, default=30)
    parser.add_argument("--lever-steps", type=int, default=5)
    parser.add_argument("--timm-batch-size", type=int, default=32)
    parser.add_argument("--epoch-steps", type=int, default=0, help="fit/tin30_epoch: steps to time (0: a full epoch)")
    parser.add_argument("--device-rows-on-cpu", action="store_true",
                        help="also run the GPU rows' code on the CPU (named cpu_as_device/...): a check without a GPU")
    parser.add_argument("--device-only", action="store_true",
                        help="only the GPU rows (a GPU machine lent for minutes need not time the CPU rows)")
    parser.add_argument("--decode-batch", type=int, default=32, help="decode/*: images a batch")
    parser.add_argument("--caption-len", type=int, default=20, help="decode/*: words a caption")
    parser.add_argument("--decode-only", action="store_true", help="only the caption decoders' decode/* rows")
    parser.add_argument("--quick", action="store_true", help="tiny numbers of steps (a smoke test)")
    args = parser.parse_args()
    json_only_stdout()
    if args.quick:
        args.loader_batches, args.fit_steps, args.lever_steps, args.batch_size = 3, 3, 1, 4  # emulated bf16: slow
        args.timm_batch_size = 2
        args.decode_batch, args.caption_len = 2, 4
    torch.set_num_threads(os.cpu_count() or 1)
    if args.decode_only:
        bench_decode(args)
        return
    if args.device_only:
        bench_device(args, torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        return
    dm = datamodule(args)
    bench_loaders(dm, args)
    bench_fit(dm, args)
    bench_levers(dm.num_classes, args)
    bench_timm(dm.num_classes, args)
    epoch_seconds("fit/tin30_epoch", args)
    bench_tta(dm, args)
    bench_compile(dm.num_classes, args, torch.device("cpu"), "step", bf16=False)
    bench_decode(args)
    if torch.cuda.is_available():
        bench_device(args, torch.device("cuda"))
    elif args.device_rows_on_cpu:
        bench_device(args, torch.device("cpu"))


if __name__ == "__main__":
    main()
