"""export.py, and predict.py / caption.py on ONNX Runtime, as a user runs them: the exports agree with PyTorch on real
images (200 TinyImageNet30 images, 100 Flickr8k images), TorchScript loads and agrees, and what cannot be exported or
loaded is said in one line."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from scripts import closing, finish, start, stop
from test_configs import unconsumed_keys
from torch import Tensor, nn

from tincap.data.cache import decode_files
from tincap.data.image_files import image_paths
from tincap.data.input_spec import InputSpec
from tincap.data.transforms import BatchTransform
from tincap.data.vocab import SPECIALS, Vocabulary
from tincap.export.captioner_graphs import EncoderGraph
from tincap.export.export_checkpoint import export_task
from tincap.export.onnx_backend import OnnxBackend
from tincap.export.onnx_format import OnnxFormat
from tincap.export.torchscript_format import TorchScriptFormat
from tincap.inference.backend import top_k_rows
from tincap.inference.torch_backend import TorchBackend, caption_files, predict_files
from tincap.models.caption_decoders import select_batch
from tincap.models.caption_search import greedy_decode
from tincap.models.cnn import CNN
from tincap.runtime.entry import task_wrapper
from tincap.runtime.errors import InvalidInput, MissingInput
from tincap.tasks.captioner import Captioner
from tincap.tasks.classifier import Classifier
from tincap.tasks.loading import load_task

pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def pixels_of(files: list[Path], size: int) -> Tensor:
    """The uint8 (N, 3, H, W) batch predict.py and caption.py feed, decoded as they decode."""
    return torch.from_numpy(decode_files(files, size).images).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def parity_images(tin30_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """200 real TinyImageNet30 test images (grayscale JPEGs among them), in a folder of their own."""
    folder = tmp_path_factory.mktemp("tin30_parity")
    for f in sorted((tin30_root / "test_set" / "test_set").iterdir())[:200]:
        (folder / f.name).symlink_to(f)
    return image_paths(folder)


@pytest.fixture(scope="module")
def flickr_dev(flickr8k_small: Path) -> list[Path]:
    """The 100 real Flickr8k dev images."""
    names = (flickr8k_small / "Flickr_8k.devImages.txt").read_text().split()
    return [flickr8k_small / "images" / n for n in names]


@pytest.fixture(scope="module")
def user_runs(tin30_classifier: Path, flickr8k_captioner: Path, parity_images: list[Path], flickr_dev: list[Path],
              tmp_path_factory: pytest.TempPathFactory) -> dict:
    """export.py, predict.py backend=onnx and caption.py backend=onnx as a user runs them, each in a process of its
    own, two at a time while this process computes what PyTorch gives: their starts are most of this file's time."""
    with ExitStack() as running:
        base = tmp_path_factory.mktemp("user_runs")
        ckpt = base / "run" / "checkpoints" / tin30_classifier.name  # a copy in a run directory of its own
        ckpt.parent.mkdir(parents=True)
        shutil.copy(tin30_classifier, ckpt)
        exporting = start("export.py", f"ckpt_path={ckpt}", f"paths.log_dir={base / 'logs'}", cwd=base)
        running.callback(stop, exporting)

        captioner = load_task(flickr8k_captioner, Captioner)
        captioner_dir = base / "captioner_onnx"
        export_task(captioner, captioner_dir, OnnxFormat(opset=17), flickr8k_captioner)
        images = base / "dev"  # the 100 dev images alone
        images.mkdir()
        for f in flickr_dev:
            (images / f.name).symlink_to(f.resolve())
        captioning = start("caption.py", "backend=onnx", f"backend.model={captioner_dir}", f"images={images}",
                           "--beam", "3", f"paths.log_dir={base / 'logs'}", cwd=base)
        running.callback(stop, captioning)

        classifier = load_task(ckpt, Classifier).eval()
        info = classifier.hparams.data_info
        pixels = pixels_of(parity_images, info["image_size"])
        with torch.inference_mode():
            logits = classifier(BatchTransform(False, mean=info["mean"], std=info["std"])(pixels)).float()  # (200, 30)
        trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", logger=False, enable_progress_bar=False,
                            enable_model_summary=False)
        rows = top_k_rows(predict_files(classifier, parity_images, trainer), classifier.class_names, 3)  # flip TTA
        captions = {beam: caption_files(captioner, flickr_dev, beam) for beam in (1, 3)}

        exported = finish(exporting)
        predicting = start("predict.py", "backend=onnx", f"backend.model={base / 'run'}",
                           f"images={parity_images[0].parent}", "top_k=3", f"paths.log_dir={base / 'logs'}",
                           cwd=base)
        running.callback(stop, predicting)
        greedy = OnnxBackend(str(captioner_dir / "model.json")).caption_writer().caption(flickr_dev, 1, 64)
        return {
            "classifier": classifier, "pixels": pixels, "logits": logits,
            "export_dir": base / "run" / "export" / "onnx", "export_stdout": exported.stdout,
            "predictions": [["file", "rank", "class", "probability"], *[[str(v) for v in row] for row in rows]],
            "predictions_csv": csv_rows(Path(closing(finish(predicting))["Run dir"]) / "predictions.csv"),
            "captioner": captioner, "captioner_ckpt": flickr8k_captioner, "captioner_dir": captioner_dir,
            "captions": captions, "onnx_greedy": greedy,
            "captions_csv": csv_rows(Path(closing(finish(captioning))["Run dir"]) / "captions.csv"),
        }


def test_classifier_onnx_matches_pytorch_on_200_real_images(user_runs: dict) -> None:
    export, task = user_runs["export_dir"], user_runs["classifier"]
    assert f"export: {export}" in user_runs["export_stdout"]  # the default: into the checkpoint's run directory
    meta = json.loads((export / "model.json").read_text())
    info = task.hparams.data_info
    assert meta["kind"] == "classifier" and meta["format"] == "onnx" and meta["opset"] == 17
    assert meta["classes"] == task.class_names and len(meta["classes"]) == 30 and meta["tta"] == "flip"
    assert meta["input"]["size"] == info["image_size"] == 64
    assert (meta["input"]["mean"], meta["input"]["std"]) == (info["mean"], info["std"])
    assert meta["graphs"] == {"model": {"file": "model.onnx", "inputs": ["image"], "outputs": ["logits"]}}

    # logits of the plain network (no TTA), one batch of 200 and one of 7: the batch axis is free
    pixels, reference = user_runs["pixels"], user_runs["logits"]
    model = OnnxBackend(str(export)).predictor("none", lambda: None)
    exported = model.logits(pixels.numpy())
    difference = (exported - reference).abs().max().item()
    print(f"\nclassifier ONNX vs PyTorch on {len(pixels)} images: max |logit difference| {difference:.3g} "
          f"(logits up to {reference.abs().max().item():.3g}), top-1 agreement "
          f"{(exported.argmax(1) == reference.argmax(1)).sum().item()}/{len(pixels)}")
    assert difference < 1e-4
    assert torch.equal(exported.argmax(1), reference.argmax(1))
    assert (model.logits(pixels[:7].numpy()) - reference[:7]).abs().max().item() < 1e-4

    # predictions.csv of predict.py backend=onnx against the PyTorch path's rows (the checkpoint's flip TTA in both)
    written, expected = user_runs["predictions_csv"], user_runs["predictions"]
    assert len(written) == len(expected) == 1 + 3 * 200
    assert [r[:3] for r in written] == [r[:3] for r in expected]  # header; file, rank, class
    # a probability moves by at most half the largest logit difference
    assert max(abs(float(a[3]) - float(b[3])) for a, b in zip(written[1:], expected[1:])) <= 1e-4


def test_classifier_torchscript_loads_and_matches(tin30_classifier: Path, parity_images: list[Path],
                                                  tmp_path: Path) -> None:
    task = load_task(tin30_classifier, Classifier)
    files = export_task(task, tmp_path, TorchScriptFormat(), tin30_classifier)
    assert [f.name for f in files] == ["model.pt", "model.json"]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format"] == "torchscript" and meta["graphs"]["model"]["file"] == "model.pt"
    info = task.hparams.data_info
    pixels = pixels_of(parity_images, 64)
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    with torch.inference_mode():
        reference = task(BatchTransform(False, mean=info["mean"], std=info["std"])(pixels)).float()
        assert (scripted(pixels) - reference).abs().max().item() < 1e-4
        assert (scripted(pixels[:5]) - reference[:5]).abs().max().item() < 1e-4


def test_captioner_onnx_writes_the_pytorch_captions_on_100_real_images(user_runs: dict, flickr_dev: list[Path]) -> None:
    meta = json.loads((user_runs["captioner_dir"] / "model.json").read_text())
    task = user_runs["captioner"]
    assert meta["kind"] == "captioner" and meta["vocabulary"] == task.vocab.itos and meta["reads"] == "spatial"
    assert meta["graphs"]["encoder"]["outputs"] == ["features", "state_0", "state_1", "state_2"]
    assert meta["graphs"]["decoder_step"]["outputs"][-1] == "attention"
    # greedy in this process, beam 3 by caption.py backend=onnx: captions.csv as caption.py writes it with PyTorch
    written = [(Path(name), caption) for name, caption in user_runs["captions_csv"][1:]]
    for beam, got in ((1, user_runs["onnx_greedy"]), (3, written)):
        expected = user_runs["captions"][beam]
        same = sum(a[0].name == b[0].name and a[1] == b[1] for a, b in zip(got, expected))
        distinct = len({c for _, c in expected})
        print(f"\ncaptioner beam {beam}: ONNX = PyTorch on {same}/{len(flickr_dev)} images, {distinct} distinct "
              "captions")
        assert distinct >= 20, "a degenerate model: too few distinct captions for the comparison to mean much"
        assert len(got) == len(flickr_dev) and same == len(flickr_dev)
    assert user_runs["captions_csv"][0] == ["image", "caption"]


def test_captioner_step_graphs_give_pytorch_states_and_attention(user_runs: dict, flickr_dev: list[Path],
                                                                tmp_path: Path) -> None:
    """The encoder and one decoder step, ONNX and TorchScript, against the PyTorch modules; the TorchScript pair
    also drives tincap's greedy search to the same captions."""
    task = user_runs["captioner"].eval()
    info = task.hparams.data_info
    pixels = pixels_of(flickr_dev[:8], info["image_size"])
    with torch.inference_mode():
        features, *state = EncoderGraph(task.encoder, task.decoder, info["mean"], info["std"])(pixels)
        log_probs, next_state = task.decoder.step(torch.full((len(pixels),), 1), tuple(state), features)
    onnx = OnnxBackend(str(user_runs["captioner_dir"])).caption_writer()
    got = onnx.encoder.run(None, {"image": pixels.numpy()})
    for a, b in zip(got, (features, *state)):
        assert (torch.from_numpy(a) - b).abs().max().item() < 1e-4
    onnx_log_probs, onnx_state = onnx.steps.step(torch.full((len(pixels),), 1), tuple(state), features)
    assert (onnx_log_probs - log_probs).abs().max().item() < 1e-4
    assert all((a - b).abs().max().item() < 1e-5 for a, b in zip(onnx_state, next_state))
    assert (onnx.steps.last_alpha - task.decoder.last_alpha).abs().max().item() < 1e-5  # (N, L), for the demo

    export_task(task, tmp_path, TorchScriptFormat(), user_runs["captioner_ckpt"])
    encoder = torch.jit.load(str(tmp_path / "encoder.pt"))
    step = torch.jit.load(str(tmp_path / "decoder_step.pt"))

    class ScriptedSteps:
        def step(self, prev: Tensor, state: tuple[Tensor, ...], image: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            log_probs, *rest = step(prev, image, *state)
            return log_probs, tuple(rest[: len(state)])

        def reorder_state(self, state: tuple[Tensor, ...], index: Tensor) -> tuple[Tensor, ...]:
            return select_batch(state, index)

    with torch.inference_mode():
        features, *state = encoder(pixels)
        scripted = greedy_decode(ScriptedSteps(), features, task.max_len, unk_id=task.unk_id, state=tuple(state))
        eager = task.generate(BatchTransform(False, mean=info["mean"], std=info["std"])(pixels), 1)
    assert torch.equal(scripted, eager)


@pytest.mark.parametrize("decoder", [
    {"_target_": "tincap.models.caption_decoders.RNNDecoder", "cell": "gru"},  # one state tensor, reads no map
    {"_target_": "tincap.models.caption_decoders.RNNDecoder", "cell": "lstm", "num_layers": 2,
     "image_input": "first_step"},
])
def test_recurrent_decoders_export_with_their_own_state(decoder: dict, tmp_path: Path) -> None:
    """Decoders that read the global vector: the step graph takes no image (the exporter drops an unread input) and
    the state is one tensor or a tuple; untrained weights, so every token is a near tie the search must still break
    as PyTorch does."""
    torch.manual_seed(0)
    vocab = Vocabulary([*SPECIALS, *["a", "dog", "runs", "on", "the", "grass", "man", "in", "red", "shirt"]])
    info = {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "max_len": 8, "num_classes": 1}
    task = Captioner(CNN(1, widths=(8, 16)), None, {**decoder, "embed_dim": 8, "hidden_dim": 16}, vocab, embed_dim=16,
                     data_info=info, model_cfg={"name": "cnn"}).eval()
    export_task(task, tmp_path, OnnxFormat(opset=17), tmp_path / "tiny.ckpt")
    model = OnnxBackend(str(tmp_path)).caption_writer()
    assert json.loads((tmp_path / "model.json").read_text())["graphs"]["decoder_step"]["inputs"][0:2] == \
        ["prev_tokens", "state_0"]
    pixels = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    for beam in (1, 3):
        with torch.inference_mode():
            eager = task.generate(BatchTransform(False, mean=info["mean"], std=info["std"])(pixels), beam)
        assert torch.equal(model.generate(pixels, beam), eager)


class OpNet(nn.Module):
    """A real network whose feature map passes through `op`."""

    spatial = True
    input_spec = InputSpec(size=8)

    def __init__(self, num_classes: int, op: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.op = op
        self.head = nn.Linear(4, num_classes)
        self.feature_dim = 4
        self.cam_layer = self.conv

    def forward_features(self, x: Tensor) -> Tensor:
        return self.op(self.conv(x))  # (N, 4, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x).mean((2, 3)))


def op_classifier(op: Callable[[Tensor], Tensor]) -> Classifier:
    info = {"class_names": ["a", "b"], "image_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3}
    return Classifier(OpNet(2, op), optimizer=None, model_cfg={"_target_": "test_export.OpNet"}, data_info=info)


def test_an_unexportable_operator_is_named(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "op_net.ckpt"
    task = op_classifier(lambda x: torch.cummax(x, dim=-1).values)  # no ONNX form in torch's exporter
    with pytest.raises(InvalidInput) as refused:
        export_task(task, tmp_path / "out", OnnxFormat(opset=17), ckpt)
    assert str(refused.value) == (
        f"model OpNet (ckpt_path={ckpt}) cannot be exported to ONNX: its graph uses the operator aten::cummax, "
        f"which torch {torch.__version__} cannot write at ONNX opset 17. Export with format=torchscript, or train a "
        "model without it")
    assert not (tmp_path / "out" / "model.json").exists() and not list((tmp_path / "out").glob("*.onnx"))
    with pytest.raises(InvalidInput, match=r"^model OpNet \(ckpt_path=.*\) cannot be exported to ONNX at opset 10: "
                                           r"its graph uses the operator aten::round, which needs opset 11. Export "
                                           r"with format.opset=11$"):
        export_task(op_classifier(torch.round), tmp_path / "out", OnnxFormat(opset=10), ckpt)

    # as an entry script prints it: one line, no traceback, and not the IR graph the exporter prints to stdout
    @task_wrapper
    def export(cfg: object) -> None:
        export_task(task, tmp_path / "out", OnnxFormat(opset=17), ckpt)

    with pytest.raises(SystemExit):
        export(OmegaConf.create({"paths": {"output_dir": str(tmp_path)}}))
    out, err = capfd.readouterr()
    assert err.strip().splitlines()[-1] == f"Error: {refused.value}" and "graph(" not in out + err


@pytest.mark.parametrize(("config", "overrides", "built"), [
    ("export", ["ckpt_path=x.ckpt"], OnnxFormat),
    ("export", ["ckpt_path=x.ckpt", "format=torchscript"], TorchScriptFormat),
    ("predict", ["ckpt_path=x.ckpt", "images=."], TorchBackend),
    ("predict", ["backend=onnx", "backend.model=export/onnx", "images=."], OnnxBackend),
    ("caption", ["backend=onnx", "backend.model=export/onnx", "images=.", "beam=3"], OnnxBackend),
])
def test_entry_configs_build_their_format_and_backend(compose_train, config: str, overrides: list[str],
                                                      built: type) -> None:
    cfg = compose_train(*overrides, config_name=config)
    assert isinstance(hydra.utils.instantiate(cfg.format if config == "export" else cfg.backend), built)
    assert unconsumed_keys(cfg) == []
    if "backend=onnx" in overrides:
        assert cfg.ckpt_path is None  # the export holds everything: no checkpoint is asked for


def test_onnx_backend_refuses_what_is_not_a_matching_export(user_runs: dict, tmp_path: Path) -> None:
    classifier_dir = user_runs["export_dir"]
    with pytest.raises(MissingInput, match=r"^backend.model=.*nowhere: no such file or folder; expected an export"):
        OnnxBackend(str(tmp_path / "nowhere")).predictor(None, lambda: None)
    with pytest.raises(InvalidInput, match=r"no model.json there nor in export/onnx/ under it; expected an export "
                                           r"written by python export.py ckpt_path=<.ckpt> format=onnx"):
        OnnxBackend(str(tmp_path)).predictor(None, lambda: None)
    with pytest.raises(InvalidInput, match=r"is an export of a classifier, but this command needs a captioner; use it "
                                           r"with predict.py"):
        OnnxBackend(str(classifier_dir / "model.onnx")).caption_writer()
    with pytest.raises(InvalidInput, match=r"tta=both: expected one of none, flip"):
        OnnxBackend(str(classifier_dir)).predictor("both", lambda: None)

    swapped = tmp_path / "swapped"  # model.onnx replaced by another graph
    shutil.copytree(classifier_dir, swapped)
    shutil.copy(user_runs["captioner_dir"] / "encoder.onnx", swapped / "model.onnx")
    with pytest.raises(InvalidInput, match=r"model.onnx does not match its model.json: its outputs are \['features', "
                                           r"'state_0', 'state_1', 'state_2'\], model.json says \['logits'\]"):
        OnnxBackend(str(swapped)).predictor(None, lambda: None)
    (swapped / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(InvalidInput, match=r"ONNX Runtime cannot load model.onnx \(.*\); expected a graph written by "
                                           r"python export.py"):
        OnnxBackend(str(swapped)).predictor(None, lambda: None)
    meta = json.loads((swapped / "model.json").read_text())
    (swapped / "model.json").write_text(json.dumps({**meta, "format": "torchscript"}))
    with pytest.raises(InvalidInput, match=r"describes a torchscript export; expected onnx"):
        OnnxBackend(str(swapped / "model.json")).predictor(None, lambda: None)


def test_transformer_captioner_onnx_writes_the_pytorch_captions_greedy_and_beam_3(
        flickr8k_transformer_captioner: Path, flickr_dev: list[Path], tmp_path: Path) -> None:
    """The Transformer decoder's step graph, with its cache of keys and values as state, driven by tincap's search
    in ONNX Runtime: the PyTorch captions on the 100 real dev images, and its cross-attention for the demo."""
    task = load_task(flickr8k_transformer_captioner, Captioner).eval()
    export_task(task, tmp_path, OnnxFormat(opset=17), flickr8k_transformer_captioner)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["decoder"] == "TransformerDecoder" and meta["graphs"]["decoder_step"]["outputs"][-1] == "attention"
    assert meta["graphs"]["encoder"]["outputs"] == ["features", *(f"state_{i}" for i in range(5))]
    onnx = OnnxBackend(str(tmp_path / "model.json")).caption_writer()
    for beam in (1, 3):
        expected = caption_files(task, flickr_dev, beam)
        got = onnx.caption(flickr_dev, beam, 64)
        distinct = len({c for _, c in expected})
        print(f"\ntransformer beam {beam}: {distinct} distinct captions on {len(flickr_dev)} images")
        assert distinct >= 20, "a degenerate model: too few distinct captions for the comparison to mean much"
        assert [(a.name, c) for a, c in got] == [(a.name, c) for a, c in expected]
    info = task.hparams.data_info
    pixels = pixels_of(flickr_dev[:8], info["image_size"])
    with torch.inference_mode():
        features, *state = EncoderGraph(task.encoder, task.decoder, info["mean"], info["std"])(pixels)
        task.decoder.step(torch.full((len(pixels),), 1), tuple(state), features)
    onnx.steps.step(torch.full((len(pixels),), 1), tuple(state), features)
    assert onnx.steps.last_alpha.shape == task.decoder.last_alpha.shape == (8, features.size(1))
    assert (onnx.steps.last_alpha - task.decoder.last_alpha).abs().max().item() < 1e-5
