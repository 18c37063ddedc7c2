"""Multi-process runs on the CPU (gloo): DDP training and evaluation, ddp_spawn in a sweep, submitit_local sweeps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
from scripts import closing, run

from tincap.tasks.gathering import gather_by_index, gather_rows

# 2 processes on the CPU; tiny images so the time goes into starting processes, not into compute
DDP = ("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
VAL_SIZES = [3, 2, 2]  # 7 validation images: not divisible by 2, so a padding sampler would count one twice


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real image-folder dataset of 3 faintly tinted noise classes: 24 train, 7 val and 7 test PNGs."""
    root = tmp_path_factory.mktemp("odd_folder")
    rng = np.random.default_rng(0)
    tints = [(128, 112, 112), (112, 128, 112), (112, 112, 128)]
    for split, sizes in {"train": [8, 8, 8], "val": VAL_SIZES, "test": [3, 3, 1]}.items():
        for c, n in enumerate(sizes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                image = np.clip(rng.normal(tints[c], 60, (16, 16, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i}.png"), image)
    return root


@pytest.fixture(scope="module")
def odd_folder_unlabelled_test(odd_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same train and val images, and the 7 test images unlabelled (test/<image>), as Kaggle hands them out."""
    root = tmp_path_factory.mktemp("odd_folder_unlabelled_test")
    for split in ("train", "val"):
        (root / split).symlink_to(odd_folder / split)
    (root / "test").mkdir()
    for image in sorted((odd_folder / "test").glob("*/*.png")):
        (root / "test" / f"{image.parent.name}_{image.name}").symlink_to(image)
    return root


def per_class_table(run_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(run_dir) / "per_class.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same_per_class(table: list[dict[str, str]], reference: list[dict[str, str]]) -> None:
    assert [r["class"] for r in table] == [r["class"] for r in reference]
    for row, ref in zip(table, reference):
        assert (row["support"], row["correct"]) == (ref["support"], ref["correct"])
        for column in ("precision", "recall", "f1", "auroc"):
            assert float(row[column]) == pytest.approx(float(ref[column]), abs=1e-5, nan_ok=True), (row, ref)


def data_args(root: Path, tmp_path: Path) -> tuple[str, ...]:
    return ("data=imagefolder", f"data.root={root}", "data.image_size=16", "data.batch_size=8",
            f"paths.cache_dir={tmp_path / 'cache'}")


def metrics_of(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def _gather_shares(rank: int, init_file: str, out: str) -> None:
    """Rank `rank` of a 2-process gloo group: gather three kinds of share; rank 0 saves what it got."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    shares = {
        "unequal": ([0, 2, 4, 6], [1, 3, 5]),  # 7 images without repeats (Lightning's UnrepeatedDistributedSampler)
        "padded": ([0, 2, 4, 6], [1, 3, 5, 0]),  # torch's DistributedSampler repeats image 0 to even out the shares
        "empty": ([0], []),  # more processes than images
    }
    got = {}
    for name, per_rank in shares.items():
        index = torch.tensor(per_rank[rank], dtype=torch.long)
        rows = torch.stack([index * 10.0, -index.float()], 1)  # each row says which image it belongs to
        got[name] = gather_by_index(index, rows, index + 100)
    got["rows"] = gather_rows(torch.arange(3 - rank))  # rank order, lengths 3 and 2
    if rank == 0:
        torch.save(got, out)
    dist.destroy_process_group()


def test_gathering_unequal_shares_across_processes(tmp_path: Path) -> None:
    out = tmp_path / "gathered.pt"
    torch.multiprocessing.spawn(_gather_shares, args=(str(tmp_path / "init"), str(out)), nprocs=2)
    got = torch.load(out)
    for name, n in (("unequal", 7), ("padded", 7), ("empty", 1)):
        index, rows, shifted = got[name]
        assert index.tolist() == list(range(n)), name  # dataset order, each image once
        assert rows.tolist() == [[10.0 * i, -float(i)] for i in range(n)], name
        assert shifted.tolist() == [i + 100 for i in range(n)], name
    assert got["rows"].tolist() == [0, 1, 2, 0, 1]


# ~50 s; `make test-slurm` (CI) checks DDP training against one process's eval under srun, and the DDP captioner test
# below checks gathered evaluation in the default suite
@pytest.mark.slow
def test_ddp_cpu_trains_and_evaluates_like_one_process(odd_folder: Path, odd_folder_unlabelled_test: Path,
                                                       tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    args = (*data_args(odd_folder, tmp_path), "model=mlp", "trainer.max_epochs=2")
    trained = closing(run("train.py", *args, *DDP, f"paths.log_dir={logs}"))
    run_dir, best = Path(trained["Run dir"]), trained["best checkpoint"]
    # one run directory; the second process logged into it and wrote nothing anywhere else
    assert [p.relative_to(logs) for p in logs.rglob("*") if run_dir not in (p, *p.parents)] == [
        Path("train"), Path("train/runs")]
    assert (run_dir / "train_ddp_process_1.log").is_file()
    trained_metrics = metrics_of(run_dir)
    assert trained_metrics["epochs"] == 2 and "test/acc" in trained_metrics

    # the same val split, and an unlabelled test split that both evaluations predict for submission.csv
    unlabelled = f"data.root={odd_folder_unlabelled_test}"
    one_dir = Path(closing(run("eval.py", f"ckpt_path={best}", "split=val", unlabelled,
                               f"paths.log_dir={tmp_path / 'e1'}"))["Run dir"])
    two_dir = Path(closing(run("eval.py", f"ckpt_path={best}", "split=val", unlabelled, *DDP,
                               f"paths.log_dir={tmp_path / 'e2'}"))["Run dir"])
    one, two = metrics_of(one_dir), metrics_of(two_dir)
    # k/7 can only equal a count over 8 (one image repeated) at 0 or 1, so these must be strictly between
    assert 0 < one["val/acc"] < 1
    assert two["val/acc"] == one["val/acc"]
    assert two["val/loss"] == pytest.approx(one["val/loss"], abs=1e-5)  # image-weighted across unequal shares
    assert two["val/auroc"] == pytest.approx(one["val/auroc"], abs=1e-6)
    assert trained_metrics["val/acc"] == one["val/acc"]  # the all-reduced re-validation of the DDP run itself

    # per_class.csv (its AUROC column from the gathered probabilities) counts every val image, as one process does
    reference = per_class_table(one_dir)
    assert [int(r["support"]) for r in reference] == VAL_SIZES
    assert_same_per_class(per_class_table(two_dir), reference)
    assert_same_per_class(per_class_table(run_dir), reference)  # written by rank 0 of the DDP training run
    # one submission.csv from both processes: every unlabelled test image once, in id order, as one process predicts
    with open(two_dir / "submission.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    test_ids = sorted(p.name for p in (odd_folder_unlabelled_test / "test").iterdir())
    assert rows[0] == ["Id", "Category"] and [r[0] for r in rows[1:]] == test_ids
    assert (two_dir / "submission.csv").read_text() == (one_dir / "submission.csv").read_text()


@pytest.mark.slow
def test_ddp_spawn_inside_a_multirun_completes_every_job(odd_folder: Path, tmp_path: Path) -> None:
    run("train.py", "-m", "trainer=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu", "model=cnn,mlp",
        *data_args(odd_folder, tmp_path), "trainer.max_epochs=1", f"paths.log_dir={tmp_path}")
    jobs = sorted((tmp_path / "train" / "multiruns").glob("*/*/metrics.json"))
    assert [p.parent.name for p in jobs] == ["0", "1"]
    for job in jobs:
        metrics = json.loads(job.read_text())
        assert metrics["epochs"] == 1  # came back from the spawned processes
        assert 0 <= metrics["test/acc"] <= 1 and 0 <= metrics["val/acc"] <= 1  # the test step ran


# ~25 s; `make test-slurm` (CI) runs sweeps through the same submitit launcher with sbatch
@pytest.mark.slow
def test_submitit_local_runs_a_sweep_as_separate_processes(odd_folder: Path, tmp_path: Path) -> None:
    run("train.py", "-m", "hydra/launcher=submitit_local", "model=mlp", "optimizer.lr=0.1,0.01",
        *data_args(odd_folder, tmp_path), "trainer.max_epochs=1", f"paths.log_dir={tmp_path}")
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    assert len({json.loads((sweep / j / "metrics.json").read_text())["val/loss"] for j in jobs}) == 2
    # each job ran in its own submitit process, which left its log in the sweep directory
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2


DDP_DECODERS = {
    "attention": ("task.decoder.embed_dim=32", "task.decoder.hidden_dim=32", "task.decoder.attention_dim=32"),
    "transformer": ("task/decoder=transformer", "task.decoder.d_model=32", "task.decoder.heads=2",
                    "task.decoder.ff_dim=64", "task.decoder.num_layers=2"),
}


@pytest.mark.parametrize("decoder", sorted(DDP_DECODERS))
def test_ddp_captioner_gathers_captions_and_scores_like_one_process(tmp_path: Path, decoder: str) -> None:
    """Each of 9 test images goes to exactly one of 2 processes; the gathered captions score as one process's."""
    args = ("experiment=shapes_attention", "data.shapes_per_class=3", "model.widths=[8,16,32,64]", "task.embed_dim=32",
            *DDP_DECODERS[decoder], "task.meteor=false", "data.image_size=32", "data.min_freq=1",
            "trainer.precision=32", f"paths.cache_dir={tmp_path / 'cache'}")
    trained = closing(run("train.py", *args, "trainer.max_epochs=2", *DDP, f"paths.log_dir={tmp_path / 'logs'}"))
    best = trained["best checkpoint"]
    one_dir = Path(closing(run("eval.py", f"ckpt_path={best}", "trainer.precision=32",
                               f"paths.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'e1'}"))["Run dir"])
    two_dir = Path(closing(run("eval.py", f"ckpt_path={best}", "trainer.precision=32", *DDP,
                               f"paths.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'e2'}"))["Run dir"])
    one, two, during = metrics_of(one_dir), metrics_of(two_dir), metrics_of(trained["Run dir"])
    with open(one_dir / "captions_test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and len({r["image"] for r in rows}) == 9
    assert (two_dir / "captions_test.csv").read_text() == (one_dir / "captions_test.csv").read_text()
    keys = [f"test/{k}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "cosine", "distinct_captions",
                                  "vocab_used", "novel_ratio", "mean_length")]
    assert one["test/bleu1"] > 0
    for key in keys:
        assert two[key] == pytest.approx(one[key], abs=1e-9), key
        assert during[key] == pytest.approx(one[key], abs=1e-9), key  # the DDP training run's own test
