"""A captioner as a user meets it: train.py, eval.py and caption.py in fresh processes, the frozen-feature cache,
caption grouping, and the datamodule's handling of bad folders."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from scripts import closing, run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tincap.commands.train import build_task
from tincap.data.caption_datamodule import CaptionData
from tincap.data.image_files import image_paths
from tincap.data.transforms import BatchTransform
from tincap.evaluation.coco_caption import JAVA_MISSING
from tincap.inference.torch_backend import caption_files
from tincap.models.caption_search import beam_search, greedy_decode
from tincap.models.cnn import CNN
from tincap.models.digest import state_digest
from tincap.tasks.captioner import Captioner
from tincap.tasks.loading import load_task

DIVERSITY_KEYS = ["distinct_captions", "vocab_used", "novel_ratio", "mean_length"]
CAPTION_KEYS = ["test/bleu1", "test/bleu2", "test/bleu3", "test/bleu4", "test/rouge_l", "test/cider", "test/cosine",
                *(f"test/{k}" for k in DIVERSITY_KEYS),
                "test/baseline_blind_bleu4", "test/baseline_blind_cider",
                "test/baseline_nearest_bleu4", "test/baseline_nearest_cider"]
TINY = ["model.widths=[8,16,32,64]", "task.decoder.embed_dim=32", "task.decoder.hidden_dim=32", "task.embed_dim=32",
        "data.min_freq=1", "data.image_size=32", "trainer.precision=32"]


def link_caption_folder(src: Path, dst: Path) -> Path:
    """A private copy of a caption folder: symlinked images, copied captions file."""
    (dst / "images").mkdir(parents=True)
    for f in sorted((src / "images").iterdir()):
        (dst / "images" / f.name).symlink_to(f)
    shutil.copy(src / "captions.txt", dst / "captions.txt")
    return dst


@pytest.fixture(scope="module")
def coco_run(coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real epoch of an attention captioner on COCO-mini, trained by `python train.py` in its own process."""
    base = tmp_path_factory.mktemp("coco_run")
    data = link_caption_folder(coco_root, base / "coco")
    # BLEU-4 is still 0 after two epochs this small, so CIDEr-D picks the best epoch
    proc = run("train.py", "experiment=shapes_attention", "data=captions", f"data.root={data}", *TINY,
               "trainer.max_epochs=2", "data.batch_size=16", "optimized_metric=val/cider", f"paths.log_dir={base / 'logs'}",
               f"paths.cache_dir={base / 'cache'}")
    found = closing(proc)
    return {"base": base, "data": data, "run_dir": Path(found["Run dir"]), "ckpt": Path(found["best checkpoint"])}


def test_training_writes_scores_baselines_captions_and_grid(coco_run: dict) -> None:
    run_dir = coco_run["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in CAPTION_KEYS:
        assert key in metrics and np.isfinite(metrics[key]), key
    assert 0 <= metrics["test/baseline_blind_bleu4"] <= 1 and metrics["test/baseline_blind_cider"] >= 0
    with open(run_dir / "captions_test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["image", "generated", "reference"]
    assert len(rows) == 8 and all(r["generated"] and r["reference"] for r in rows)  # 10% of 80 images
    generated = [r["generated"].split() for r in rows]
    assert metrics["test/distinct_captions"] == len({tuple(g) for g in generated})
    assert metrics["test/vocab_used"] == len({w for g in generated for w in g})
    assert metrics["test/mean_length"] == pytest.approx(sum(map(len, generated)) / len(generated))
    for key in DIVERSITY_KEYS:
        assert f"val/{key}" in metrics, key
    image_tags, scalar_tags = set(), set()
    for events in (run_dir / "tensorboard").rglob("events.out.tfevents*"):  # one file per trainer stage
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        image_tags.update(acc.Tags()["images"])
        scalar_tags.update(acc.Tags()["scalars"])
    assert "val/captions" in image_tags
    assert {f"val/{k}" for k in DIVERSITY_KEYS} <= scalar_tags and {f"test/{k}" for k in DIVERSITY_KEYS} <= scalar_tags


def test_tincap_scores_equal_pycocoevalcap_on_real_captions(coco_run: dict) -> None:
    """The captions a real run wrote, scored by coco-caption's own BLEU, METEOR, ROUGE-L and CIDEr-D on the same
    tokens: equal to 1e-6. METEOR needs Java: without it the run says why it skipped METEOR, and scores the rest."""
    metrics = json.loads((coco_run["run_dir"] / "metrics.json").read_text())
    with open(coco_run["run_dir"] / "captions_test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    dm = CaptionData(root=coco_run["data"], image_size=32, min_freq=1)
    dm.setup()
    test = dm.splits["test"]
    references = dm.references("test")
    refs = {r["image"]: [" ".join(c) for c in references[test.names.index(r["image"])]] for r in rows}
    hyps = {r["image"]: [r["generated"]] for r in rows}
    assert len(hyps) == len(test.names) and all(hyps[n][0] for n in hyps)
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    for k in range(4):
        assert metrics[f"test/bleu{k + 1}"] == pytest.approx(bleu[k], abs=1e-6)
    assert metrics["test/cider"] == pytest.approx(Cider().compute_score(refs, hyps)[0], abs=1e-6)
    assert metrics["test/rouge_l"] == pytest.approx(Rouge().compute_score(refs, hyps)[0], abs=1e-6)
    assert metrics["test/bleu1"] > 0 and metrics["test/rouge_l"] > 0
    if shutil.which("java") is None:
        assert "test/meteor" not in metrics and metrics["test/meteor_skipped"] == JAVA_MISSING
    else:
        assert "test/meteor_skipped" not in metrics
        assert metrics["test/meteor"] == pytest.approx(Meteor().compute_score(refs, hyps)[0], abs=1e-6)
        assert metrics["test/meteor"] > 0


def test_eval_takes_dataset_and_vocabulary_from_the_checkpoint(coco_run: dict) -> None:
    """`eval.py ckpt_path=... data.root=...` alone; a min_freq that would rebuild another vocabulary changes nothing."""
    trained = json.loads((coco_run["run_dir"] / "metrics.json").read_text())
    proc = run("eval.py", f"ckpt_path={coco_run['ckpt']}", f"data.root={coco_run['data']}", "trainer.precision=32",
               "+data.min_freq=50", f"paths.log_dir={coco_run['base'] / 'eval_logs'}",
               f"paths.cache_dir={coco_run['base'] / 'cache'}")
    metrics = json.loads((Path(closing(proc)["Run dir"]) / "metrics.json").read_text())
    assert metrics["split"] == "test"
    for key in CAPTION_KEYS:
        assert metrics[key] == pytest.approx(trained[key], abs=1e-6), key


def test_eval_beam_1_is_greedy(coco_run: dict) -> None:
    proc = run("eval.py", f"ckpt_path={coco_run['ckpt']}", f"data.root={coco_run['data']}", "trainer.precision=32",
               "task.beam=1", f"paths.log_dir={coco_run['base'] / 'eval_logs'}", f"paths.cache_dir={coco_run['base'] / 'cache'}")
    with open(Path(closing(proc)["Run dir"]) / "captions_test.csv", newline="") as fh:
        written = [r["generated"] for r in csv.DictReader(fh)]
    task = load_task(coco_run["ckpt"], Captioner).eval()
    info = task.hparams.data_info
    dm = CaptionData(root=coco_run["data"], image_size=info["image_size"], max_len=info["max_len"])
    dm.load_state_dict({"vocab": task.vocab.state_dict()})
    with torch.inference_mode():
        greedy = [c for x, _ in dm.eval_dataloader("test") for c in task.captions(x, beam_size=1)]
    assert written == greedy


@pytest.mark.slow  # ~40 s on 2 cores; beam search with a length penalty is unit-tested in test_caption_models.py
def test_eval_chooses_beam_and_length_penalty_on_validation(flickr8k_captioner: Path, flickr8k_small: Path,
                                                            tmp_path: Path) -> None:
    """`eval.py split=val task.beam=3 task.length_penalty=2` decodes validation by beam search with that GNMT penalty, not
    greedily (the checkpoint's val_beam_size) with the checkpoint's 0; the penalty favours longer captions."""
    hparams = load_task(flickr8k_captioner, Captioner).hparams
    assert (hparams.val_beam_size, hparams.length_penalty) == (1, 0.0)
    written = {}
    for beam, penalty in (("null", "null"), ("3", "null"), ("3", "2")):
        proc = run("eval.py", f"ckpt_path={flickr8k_captioner}", f"data.root={flickr8k_small}", "split=val",
                   f"task.beam={beam}", f"task.length_penalty={penalty}", f"paths.log_dir={tmp_path / beam / penalty}",
                   f"paths.cache_dir={tmp_path / 'cache'}")
        run_dir = Path(closing(proc)["Run dir"])
        with open(run_dir / "captions_val.csv", newline="") as fh:
            captions = [r["generated"] for r in csv.DictReader(fh)]
        written[beam, penalty] = captions, json.loads((run_dir / "metrics.json").read_text())["val/mean_length"]
    greedy, beam3, penalised = written["null", "null"], written["3", "null"], written["3", "2"]
    assert len(greedy[0]) == len(beam3[0]) == len(penalised[0]) > 0
    assert beam3[0] != greedy[0]
    assert penalised[0] != beam3[0] and penalised[1] > beam3[1]


def test_caption_py_needs_only_the_checkpoint(coco_run: dict, tmp_path: Path) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    for f in sorted((coco_run["data"] / "images").iterdir())[:3]:
        shutil.copy(f.resolve(), images / f.name)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    ckpt = shutil.copy(coco_run["ckpt"], tmp_path / "model.ckpt")
    hidden = coco_run["data"].with_name("coco_hidden")
    coco_run["data"].rename(hidden)  # the training folder is gone while caption.py runs
    try:
        proc = run("caption.py", f"ckpt_path={ckpt}", f"images={images}", "--beam", "2",
                   f"paths.log_dir={tmp_path / 'logs'}", f"out={tmp_path / 'captions.csv'}", cwd=tmp_path,
                   env_extra={"TINCAP_SHARED_DATA": str(tmp_path / "none"), "TINCAP_CACHE": str(tmp_path / "c")})
    finally:
        hidden.rename(coco_run["data"])
    printed = [line.split("\t") for line in proc.stdout.splitlines() if "\t" in line]
    assert "broken.jpg" in proc.stderr and "unreadable" in proc.stderr
    with open(tmp_path / "captions.csv", newline="") as fh:
        rows = [(r["image"], r["caption"]) for r in csv.DictReader(fh)]
    task = load_task(ckpt, Captioner)
    expected = [(p.name, c) for p, c in caption_files(task, image_paths(images), beam=2)]
    assert [tuple(p) for p in printed] == rows == expected
    assert [name for name, _ in rows] == sorted(f.name for f in images.iterdir() if f.name != "broken.jpg")


def test_caption_py_bad_inputs(coco_run: dict, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images=.*nowhere: no such file or folder"):
        image_paths(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: the folder holds no"):
        image_paths(tmp_path / "empty")
    classifier_like = tmp_path / "not_a_captioner.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model_cfg": {"name": "cnn"}, "data_info": {"class_names": ["a"]}}},
               classifier_like)
    with pytest.raises(ValueError, match=r"not_a_captioner\.ckpt is a classifier checkpoint, but this command needs a "
                                         r"captioner"):
        load_task(classifier_like, Captioner)


# ---------------------------------------------------------------- frozen-encoder feature cache


def _shapes_data(cache: Path, **kw) -> CaptionData:
    dm = CaptionData(shapes_per_class=2, image_size=32, batch_size=8, cache_dir=cache, **kw)
    dm.setup()
    return dm


def test_feature_cache_is_computed_once_per_encoder(tmp_path: Path) -> None:
    net = CNN(num_classes=1, widths=(8, 16)).eval()
    calls = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return net.forward_features(x)

    digest = state_digest(net)
    first = _shapes_data(tmp_path)
    first.use_encoder(encode, digest)
    encoded = sum(calls)
    assert encoded == sum(len(v.names) for v in first.splits.values())
    assert len(list(tmp_path.glob("features-*.h5"))) == 3
    first_features = dict(first.inputs)
    second = _shapes_data(tmp_path)
    second.use_encoder(encode, digest)
    assert sum(calls) == encoded  # read back, not recomputed
    norm = BatchTransform(train=False, mean=second.mean, std=second.std)
    direct = net.forward_features(norm(torch.from_numpy(second.splits["val"].images).permute(0, 3, 1, 2)))
    assert torch.allclose(torch.from_numpy(second.inputs["val"]).float(), direct, atol=1e-2, rtol=1e-2)
    assert np.array_equal(first_features["train"], second.inputs["train"])

    with torch.no_grad():
        net.features[0][0].weight.add_(0.1)  # other weights: the cache is stale and rebuilt
    third = _shapes_data(tmp_path)
    third.use_encoder(encode, state_digest(net))
    assert sum(calls) == 2 * encoded
    x, tokens = next(iter(third.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape[1:] == (16, 8, 8) and tokens.dim() == 2


def test_frozen_encoder_trains_the_decoder_on_cached_features(compose_train) -> None:
    from tincap.commands.train import train

    cfg = compose_train("experiment=shapes_attention", "debug=fdr", "data.shapes_per_class=3", *TINY[:4],
                        "task.freeze_encoder=true")
    metrics, objects = train(cfg)
    task: Captioner = objects["task"]
    dm = objects["datamodule"]
    assert task.encoder.precomputed and dm.features_from == state_digest(task.encoder.backbone)
    assert dm.inputs["train"].shape[1] == 64 and "test/bleu4" in metrics
    assert not any(p.requires_grad for p in task.encoder.backbone.parameters())


@pytest.mark.parametrize("frozen_norms", [True, False])
def test_fine_tuned_encoder_keeps_its_norms_only_when_asked(compose_train, frozen_norms: bool) -> None:
    """task.freeze_encoder_norms=true fine-tunes the encoder's convolutions around BatchNorm layers that keep their
    statistics and affine weights (here the fresh ones: mean 0, variance 1, weight 1, bias 0); false trains them."""
    from tincap.commands.train import train

    cfg = compose_train("experiment=shapes_attention", "debug=fdr", "data.shapes_per_class=3", *TINY[:4],
                        "task.freeze_encoder=false", f"task.freeze_encoder_norms={str(frozen_norms).lower()}")
    _, objects = train(cfg)
    backbone = objects["task"].encoder.backbone
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    untouched = [torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
                 and torch.equal(bn.running_var, torch.ones_like(bn.running_var))
                 and torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any() for bn in norms]
    assert norms and untouched == [frozen_norms] * len(norms)
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.requires_grad for c in convs)


# ---------------------------------------------------------------- grouping and decoding


def test_grouped_captions_give_the_same_loss_as_pairs(compose_train) -> None:
    """All K captions of an image in one step equal K (image, caption) pairs: the encoder just runs once."""
    cfg = compose_train("experiment=shapes_attention", "data.shapes_per_class=2", *TINY[:4],
                        "task/decoder=lstm", "task.decoder.dropout=0")
    grouped = _shapes_data(None, group_captions=True)
    torch.manual_seed(0)
    task, _ = build_task(cfg, grouped)
    x, tokens = grouped.train_dataloader().dataset.__getitems__(list(range(6)))
    n, k, _ = tokens.shape
    assert k == 5 and (tokens[:, :, 0] == grouped.vocab.bos_id).all()
    pairs_x = x.repeat_interleave(k, 0)
    pairs_tokens = tokens.flatten(0, 1)
    task.train()
    loss_grouped = task.training_step((x, tokens), 0)
    loss_pairs = task.training_step((pairs_x, pairs_tokens), 0)
    assert torch.allclose(loss_grouped, loss_pairs, atol=1e-5)
    for i in range(n):
        for j, caption in enumerate(grouped.splits["train"].captions[i]):
            ids = grouped.vocab.encode(caption, grouped.max_len)
            assert tokens[i, j, : len(ids)].tolist() == ids and not tokens[i, j, len(ids):].any()


class _LovesUnk(torch.nn.Module):
    """A decoder whose favourite word is <unk> (id 3), then 'a' (4), then <eos>."""

    def init_state(self, image):
        return torch.zeros(1, len(image), 1)

    def step(self, prev, state, image):
        logits = torch.tensor([-9.0, -9.0, -2.0, 0.0, -1.0]).repeat(len(prev), 1)
        logits[:, 2] += state[0, :, 0]
        return logits.log_softmax(-1), state + 3

    def reorder_state(self, state, index):
        return state.index_select(1, index)


@pytest.mark.parametrize("beam", [1, 3])
def test_unk_is_never_generated_when_suppressed(beam: int) -> None:
    feats = torch.zeros(2, 4)
    decode = (lambda **kw: greedy_decode(_LovesUnk(), feats, 6, **kw)) if beam == 1 else (
        lambda **kw: beam_search(_LovesUnk(), feats, beam, 6, **kw))
    assert (decode() == 3).any()
    out = decode(unk_id=3)
    assert not (out == 3).any() and (out == 4).any()


# ---------------------------------------------------------------- bad folders through the datamodule


def test_unreadable_image_is_skipped_with_its_captions(coco_root: Path, tmp_path: Path) -> None:
    data = link_caption_folder(coco_root, tmp_path / "coco")
    victim = sorted((data / "images").iterdir())[0]
    victim.unlink()
    victim.write_bytes(b"truncated")
    dm = CaptionData(root=data, image_size=32, cache_dir=tmp_path / "cache", min_freq=1)
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable image.*{victim.name}"):
        dm.setup()
    names = [n for s in dm.splits.values() for n in s.names]
    assert len(names) == 79 and victim.name not in names
    assert all(len(s.captions) == len(s.names) == len(s.images) for s in dm.splits.values())


def test_bad_captions_file_fails_before_any_cache_is_written(coco_root: Path, tmp_path: Path) -> None:
    data = link_caption_folder(coco_root, tmp_path / "coco")
    lines = (data / "captions.txt").read_text().splitlines()
    name = lines[1].split(",")[0]
    (data / "captions.txt").write_text("\n".join([*lines[:3], f"{name},   ", *lines[3:]]) + "\n")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"captions\.txt:4: .*empty caption"):
        CaptionData(root=data, image_size=32, cache_dir=cache).setup()
    assert not cache.exists() or not any(cache.iterdir())


def test_report_shows_caption_scores_and_diversity(coco_run: dict) -> None:
    run_dir = coco_run["run_dir"]
    run("report.py", str(run_dir.parent))
    with open(run_dir.parent / "report.csv", newline="") as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["run"] == run_dir.name]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/bleu4", "test/cider", *(f"test/{k}" for k in DIVERSITY_KEYS)):
        assert float(row[key]) == metrics[key], key
    header = (run_dir.parent / "report.md").read_text().split("| run |", 1)[1].splitlines()[0]
    assert "test/distinct_captions" in header and "test/novel_ratio" in header


# ---------------------------------------------------------------- self-critical sequence training


def test_scst_from_a_checkpoint_starts_from_its_weights(coco_run: dict, compose_train) -> None:
    """task.scst.init_from: the run is the SCST stage alone, from that checkpoint's weights and vocabulary."""
    from tincap.commands.train import train

    trained = json.loads((coco_run["run_dir"] / "metrics.json").read_text())
    cfg = compose_train("experiment=shapes_attention", "data=captions", f"data.root={coco_run['data']}", *TINY,
                        "data.batch_size=16", "task/scst=from_checkpoint", "task.scst.epochs=1",
                        f"task.scst.init_from={coco_run['ckpt']}", "trainer.limit_train_batches=0")
    metrics, objects = train(cfg)
    assert objects["task"].self_critical and objects["datamodule"].train_items == "images"
    for key in ("val/bleu1", "val/cider", "val/cosine", "val/mean_length"):  # no step taken: the checkpoint's scores
        assert metrics[key] == pytest.approx(trained[key], abs=1e-6), key


def test_an_scst_checkpoint_is_evaluated_with_its_own_weights(coco_run: dict, compose_train) -> None:
    """eval.py of a task.scst.init_from run's checkpoint decodes with the SCST weights, not init_from's reloaded."""
    from tincap.commands.eval import evaluate
    from tincap.commands.train import train

    data = f"data.root={coco_run['data']}"
    cfg = compose_train("experiment=shapes_attention", "data=captions", data, *TINY, "data.batch_size=16",
                        "task/scst=from_checkpoint", "task.scst.epochs=1", f"task.scst.init_from={coco_run['ckpt']}",
                        "task.scst.lr=0.05")
    tested, objects = train(cfg)
    before = torch.load(coco_run["ckpt"], map_location="cpu", weights_only=False)["state_dict"]
    after = torch.load(objects["best_ckpt"], map_location="cpu", weights_only=False)["state_dict"]
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))  # SCST moved it
    evaluated = evaluate(compose_train(f"ckpt_path={objects['best_ckpt']}", data, "trainer.precision=32",
                                       config_name="eval"))
    for key in CAPTION_KEYS:
        assert evaluated[key] == pytest.approx(tested[key], abs=1e-6), key


def test_scst_stage_follows_cross_entropy_in_the_same_run(tmp_path: Path) -> None:
    args = ("experiment=shapes_attention", "data.shapes_per_class=2", *TINY[:4], "task.decoder.attention_dim=32",
            "data.image_size=32", "trainer.precision=32", "trainer.max_epochs=1", "task.scst.epochs=2",
            "task.scst.samples=2", f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}")
    run_dir = Path(closing(run("train.py", *args))["Run dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and np.isfinite(metrics["test/cider"])
    rewards, losses = [], []
    for events in (run_dir / "tensorboard").rglob("events.out.tfevents*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        scalars = acc.Tags()["scalars"]
        rewards += [e.step for e in acc.Scalars("train/reward")] if "train/reward" in scalars else []
        losses += [e.step for e in acc.Scalars("train/loss")] if "train/loss" in scalars else []
    assert len(losses) == 3 and len(rewards) == 2 and min(rewards) > min(losses)  # SCST epochs come after XE's


def test_imagenet_experiment_captions_with_the_shared_weights_frozen(coco_root: Path, compose_train,
                                                                     tmp_path: Path) -> None:
    """experiment=flickr8k_attention_imagenet through the backbone contract: the shared EfficientNet-Lite0 at its own 224 px
    and mean/std, its 7x7x1280 maps cached once, an attention decoder sized from them."""
    from test_backbones import shared_weights

    from tincap.commands.train import train

    weights = shared_weights()
    data = link_caption_folder(coco_root, tmp_path / "coco")
    cfg = compose_train("experiment=flickr8k_attention_imagenet", f"data.root={data}", f"init.weights_path={weights}",
                        "debug=fdr", "data.min_freq=1", "task.decoder.embed_dim=16", "task.decoder.hidden_dim=16",
                        "task.decoder.attention_dim=16", "trainer.precision=32")
    metrics, objects = train(cfg)
    task: Captioner = objects["task"]
    dm: CaptionData = objects["datamodule"]
    info = task.hparams.data_info
    assert info["image_size"] == 224 and info["mean"] == pytest.approx([127 / 255] * 3, abs=1e-5)
    assert task.encoder.precomputed and dm.inputs["train"].shape[1:] == (1280, 7, 7)
    assert task.decoder.attention.feature_proj.in_features == 1280 and task.encoder.project is None
    assert "tf_efficientnet_lite0_imagenet.pth" in metrics["init"] and np.isfinite(metrics["test/bleu1"])
    net = task.encoder.backbone
    pixels = torch.from_numpy(dm.splits["val"].images[:2]).permute(0, 3, 1, 2)
    with torch.inference_mode():
        direct = net.forward_features(BatchTransform(train=False, mean=dm.mean, std=dm.std)(pixels))
    assert torch.allclose(torch.from_numpy(dm.inputs["val"][:2]).float(), direct, atol=2e-2, rtol=1e-2)
