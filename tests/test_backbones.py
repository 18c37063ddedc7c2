"""The backbone contract, timm backbones, strict weights loading, frozen BatchNorm and the shared ImageNet weights."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tincap.data.imagefolder import ImageFolderData
from tincap.data.input_spec import InputSpec
from tincap.evaluation.gradcam import cam_layer, grad_cams
from tincap.models import construct_network
from tincap.models.backbone import BACKBONE_MEMBERS, check_backbone
from tincap.models.initialisation import Initialisation, build_network
from tincap.tasks.classifier import Classifier, param_groups
from tincap.tasks.schedules import scale_group_lrs

REPO = Path(__file__).resolve().parents[1]
TIMM = "tincap.models.timm_backbone.TimmBackbone"
# the ImageNet indices of Imagenette's 10 classes, in its sorted-wnid folder order (../shared/weights/README.md)
IMAGENETTE_IN1K = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


def model_cfg(name: str, **overrides: object) -> dict:
    """A conf/model/<name>.yaml as a plain dict, with overrides (no interpolations left to resolve)."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml"))
    return {**cfg, **overrides}


def shared_weights() -> Path:
    env = os.environ.get("TINCAP_WEIGHTS")
    path = (Path(env) if env else REPO.parent / "shared" / "weights") / "tf_efficientnet_lite0_imagenet.pth"
    if not path.is_file():
        pytest.skip(f"shared ImageNet weights not found at {path} (set TINCAP_WEIGHTS or place them at ../shared/weights)")
    return path


NETWORKS = {
    "mlp": (model_cfg("mlp", image_size=32), 32),
    "cnn": (model_cfg("cnn", widths=[8, 16, 32, 64]), 64),
    "resnet": (model_cfg("resnet"), 64),
    "alexnet": (model_cfg("alexnet"), 64),
    "timm-resnet18": (model_cfg("timm", arch="resnet18"), 64),
    "timm-tf_efficientnet_lite0": (model_cfg("timm", arch="tf_efficientnet_lite0"), 64),
    "timm-convnext_atto": (model_cfg("timm", arch="convnext_atto"), 64),
    "timm-vit_tiny_patch16_224": (model_cfg("timm", arch="vit_tiny_patch16_224"), 224),
}


def test_a_network_without_the_contract_is_refused_with_what_it_lacks() -> None:
    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)  # a submodule: found although nn.Module keeps it in _modules

    with pytest.raises(TypeError, match=r"model mine \(Bare\).*lacks \['feature_dim', 'spatial', 'input_spec', "
                                        r"'cam_layer', 'forward_features'\]"):
        check_backbone(Bare(), "mine")


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_keeps_the_backbone_contract(name: str) -> None:
    cfg, size = NETWORKS[name]
    torch.manual_seed(0)
    net = build_network(cfg, num_classes=7).eval()
    assert all(hasattr(net, a) for a in BACKBONE_MEMBERS)
    assert isinstance(net.input_spec, InputSpec) and len(net.input_spec.mean) == len(net.input_spec.std) == 3
    assert isinstance(net.head, nn.Linear) and net.head.out_features == 7
    x = torch.randn(2, 3, size, size)
    seen: list[torch.Tensor] = []
    hook = net.cam_layer.register_forward_hook(lambda m, i, o: seen.append(o)) if net.cam_layer is not None else None
    logits = net(x)
    assert logits.shape == (2, 7)
    feats = net.forward_features(x)
    if net.spatial:
        assert feats.ndim == 4 and feats.shape[:2] == (2, net.feature_dim), feats.shape
    else:
        assert feats.shape == (2, net.feature_dim)
    if hook is not None:  # Grad-CAM's layer lies on the path to the logits and outputs the feature map
        hook.remove()
        assert seen and seen[0].shape[1] == net.feature_dim
    # the head is the last layer: zeroing it zeroes the logits
    nn.init.zeros_(net.head.weight)
    nn.init.zeros_(net.head.bias)
    assert torch.count_nonzero(net(x)) == 0


def test_mlp_and_vit_declare_what_they_lack() -> None:
    mlp = build_network(NETWORKS["mlp"][0], 3)
    assert not mlp.spatial and mlp.cam_layer is None and mlp.input_spec == InputSpec(size=32, fixed_size=True)
    vit = build_network(NETWORKS["timm-vit_tiny_patch16_224"][0], 3)
    assert vit.spatial and vit.cam_layer is None and vit.input_spec.fixed_size and vit.input_spec.size == 224
    with pytest.raises(ValueError, match="no spatial feature map for Grad-CAM"):
        cam_layer(mlp)


def test_fixed_size_architecture_refuses_another_image_size(compose_train, tmp_path: Path) -> None:
    from tincap.commands.train import build_task

    cfg = compose_train("data=shapes", "data.n_per_class=2", "data.image_size=64", "model=timm",
                        "model.arch=vit_tiny_patch16_224")
    import hydra

    dm = hydra.utils.instantiate(cfg.data)
    with pytest.raises(ValueError, match=r"model vit_tiny_patch16_224 only takes 224x224 images, but data.image_size=64; "
                                         r"set data.image_size=224"):
        build_task(cfg, dm)
    spec = InputSpec(size=64, fixed_size=True)
    assert spec.image_size(None, "mlp") == 64 and spec.image_size(64, "mlp") == 64
    assert InputSpec(size=224).image_size(128, "timm") == 128  # a preference, not a requirement


def test_unknown_timm_arch_suggests_names() -> None:
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match=r"model.arch=resnet1 is not a timm architecture; did you mean .*resnet18"):
        construct_network(model_cfg("timm", arch="resnet1"), 3)


def test_pretrained_true_offline_fails_at_once_naming_weights_path(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "data=shapes", "data.n_per_class=2", "model=timm",
                           "model.arch=resnet18", "model.pretrained=true", f"paths.log_dir={tmp_path}",
                           f"paths.cache_dir={tmp_path}"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "model.pretrained=true: could not download timm's weights for resnet18" in err
    assert "init.weights_path=/path/to/resnet18.pth" in err


def test_timm_state_dict_loads_whole_and_replaces_the_head(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    import timm

    ref = timm.create_model("resnet18", num_classes=1000)
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")
    with caplog.at_level(logging.INFO):
        net = build_network(model_cfg("timm", arch="resnet18"), 30,
                            Initialisation(weights_path=str(tmp_path / "resnet18.pth")))
    own = net.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ref.state_dict().items() if not k.startswith("fc."))
    assert net.head.out_features == 30 and torch.count_nonzero(net.head.weight) == 0
    assert "replaced its head (1000 classes) by a new zero-initialised 30-class head" in caplog.text
    # a tincap checkpoint of the same network loads too, head included when the class count matches
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"model_cfg": model_cfg("timm", arch="resnet18"), "data_info": {"image_size": 96, "dataset": "tin30"}}},
               tmp_path / "run.ckpt")
    again = build_network(model_cfg("timm", arch="resnet18"), 30,
                          Initialisation(weights_path=str(tmp_path / "run.ckpt")))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), net.state_dict().values()))
    assert again.input_spec.size == 96  # fed as the checkpoint's own data was


def test_weights_of_another_architecture_list_the_keys(tmp_path: Path) -> None:
    import timm

    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError) as err:
        build_network(model_cfg("timm", arch="resnet34"), 10, Initialisation(weights_path=str(tmp_path / "r18.pth")))
    message = str(err.value)
    assert "r18.pth does not fit model resnet34" in message
    assert "missing key(s): " in message and "layer1.2.conv1.weight" in message
    torch.save({"extra.weight": torch.zeros(3), **timm.create_model("resnet18").state_dict()}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"1 unexpected key\(s\): .*extra.weight"):
        build_network(model_cfg("timm", arch="resnet18"), 10, Initialisation(weights_path=str(tmp_path / "extra.pth")))


def fit_a_few_steps(net: nn.Module, size: int, classes: int = 3) -> None:
    data = TensorDataset(torch.randn(32, 3, size, size) * 2 + 1, torch.randint(0, classes, (32,)))
    task = Classifier(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), channels_last=False)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1)
    trainer.fit(task, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))


def norm_buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k or "num_batches_tracked" in k}


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet", "timm-tf_efficientnet_lite0"])
def test_frozen_backbone_keeps_its_batchnorm_statistics(name: str) -> None:
    cfg, size = NETWORKS[name]
    size = min(size, 32)
    cfg = {**cfg, **({"image_size": size} if name == "mlp" else {})}
    torch.manual_seed(0)
    frozen = build_network(cfg, 3, Initialisation(freeze_backbone=True))
    before, head_before = norm_buffers(frozen), frozen.head.weight.clone()
    assert before
    fit_a_few_steps(frozen, size)
    after = norm_buffers(frozen)
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]
    assert not torch.equal(head_before, frozen.head.weight)  # the head did train
    torch.manual_seed(0)
    trained = build_network(cfg, 3)  # the control: without freezing the same steps move the statistics
    fit_a_few_steps(trained, size)
    assert any(not torch.equal(before[k], v) for k, v in norm_buffers(trained).items())


def test_backbone_learns_at_its_own_rate() -> None:
    net = build_network(NETWORKS["cnn"][0], 3)
    groups = param_groups(net, weight_decay_norm_bias=False, backbone_lr_scale=0.1)
    opt = scale_group_lrs(torch.optim.SGD(groups, lr=0.5))
    head = {id(p) for p in net.head.parameters()}
    for group in opt.param_groups:
        is_head = {id(p) in head for p in group["params"]}
        assert len(is_head) == 1
        assert group["lr"] == pytest.approx(0.5 if is_head.pop() else 0.05)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_gradcam_on_a_timm_model() -> None:
    torch.manual_seed(0)
    net = build_network(model_cfg("timm", arch="resnet18"), 4).eval()
    assert cam_layer(net) is net.feature_map
    result = grad_cams(net, cam_layer(net), torch.randn(6, 3, 96, 96))
    assert result.cams.shape == (6, 96, 96) and result.probs.shape == (6, 4)
    assert (result.cams >= 0).all() and (result.cams <= 1).all()
    assert any(c.max() - c.min() > 0.5 for c in result.cams)  # real heatmaps (a random net may leave some flat)


def test_shared_imagenet_weights_classify_imagenette(imagenette_root: Path) -> None:
    """The shared EfficientNet-Lite0 through tincap's own loading and preprocessing: >= 0.95 on Imagenette val."""
    cfg = model_cfg("timm", arch="tf_efficientnet_lite0", mean=[127 / 255] * 3, std=[128 / 255] * 3)
    net = build_network(cfg, 1000, Initialisation(weights_path=str(shared_weights()))).eval()
    dm = ImageFolderData(root=imagenette_root, image_size=None, batch_size=50, cache_dir=None)
    dm.feed(net.input_spec, "timm")
    assert dm.image_size == 224
    dm.setup()
    assert len(dm.splits["val"].images) == 300
    correct = 0
    with torch.inference_mode():
        for x, y in dm.val_dataloader():
            correct += int((net(x)[:, IMAGENETTE_IN1K].argmax(1) == y).sum())
    assert correct / 300 >= 0.95, correct / 300
