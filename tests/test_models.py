"""Networks and how they are initialised: local weights, head replacement, freezing, wrong-model errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import alexnet as tv_alexnet
from torchvision.models import resnet18 as tv_resnet18

from tincap.models.alexnet import AlexNet
from tincap.models.cnn import CNN
from tincap.models.initialisation import Initialisation, build_network
from tincap.models.resnet import ResNet
from tincap.runtime.errors import InvalidInput, UserError

CNN_CFG = {"_target_": "tincap.models.cnn.CNN", "widths": [8, 16, 32, 64]}


@pytest.mark.parametrize("size", [32, 64])
def test_networks_accept_small_images(size: int) -> None:
    for net in (CNN(5, widths=(8, 16, 32, 64)), ResNet(5, depth=18), AlexNet(5)):
        net.eval()
        assert net(torch.randn(2, 3, size, size)).shape == (2, 5)
        assert net.forward_features(torch.randn(1, 3, size, size)).ndim == 4


def test_cnn_strided_stem_downsamples_in_the_conv() -> None:
    """stem_stride=2 without the stem pool halves the image in the stem conv: the same feature-map sizes as the
    pooled stem, with no max-pool left in the stem."""
    pooled, strided = CNN(5, widths=(8, 16)), CNN(5, widths=(8, 16), stem_stride=2, stem_pool=False)
    x = torch.randn(2, 3, 64, 64)
    assert strided.features[0](x).shape == (2, 8, 32, 32)  # the conv alone halves 64 px
    assert pooled.features[0](x).shape == (2, 8, 64, 64)
    assert strided.forward_features(x).shape == pooled.forward_features(x).shape == (2, 16, 16, 16)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in strided.features[:2])
    assert CNN(5, widths=(8, 16), stem_stride=2).forward_features(x).shape == (2, 16, 8, 8)  # conv and pool: 4x


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"stem_stride": 0}, "model.stem_stride=0: expected an integer >= 1"),
    ({"convs_per_stage": 0}, "model.convs_per_stage=0: expected an integer >= 1"),
    ({"widths": ()}, "model.widths=[]: expected a non-empty list"),
    ({"widths": (8, 0)}, "model.widths=[8, 0]: expected a non-empty list of channel counts >= 1"),
    ({"dropout": 1.0}, "model.dropout=1.0: expected a probability in [0, 1)"),
])
def test_cnn_refuses_impossible_sizes_when_built(kwargs: dict, named: str) -> None:
    """A stride or width of 0 would build, and fail only at the first forward pass with a traceback."""
    with pytest.raises(InvalidInput) as refused:
        CNN(5, **{"widths": (8, 16), **kwargs})
    assert str(refused.value).startswith(named)


def test_torchvision_state_dict_loads_into_resnet_and_alexnet(tmp_path: Path) -> None:
    torch.manual_seed(0)
    for name, ref in (("resnet", tv_resnet18(num_classes=1000)), ("alexnet", tv_alexnet(num_classes=1000))):
        path = tmp_path / f"{name}.pth"
        torch.save(ref.state_dict(), path)
        target = {"resnet": "tincap.models.resnet.ResNet", "alexnet": "tincap.models.alexnet.AlexNet"}[name]
        # ResNet's 3x3 small-input stem would not fit ImageNet's 7x7 conv1: keep torchvision's stem
        cfg = {"_target_": target, "small_input": name == "alexnet"}
        net = build_network(cfg, num_classes=10, init=Initialisation(weights_path=str(path)))
        own = net.state_dict()
        ref_sd = ref.state_dict()
        head = "fc" if name == "resnet" else "classifier.6"
        assert own[f"{head}.weight"].shape[0] == 10  # new head for 10 classes
        copied = [k for k in ref_sd if own[k].shape == ref_sd[k].shape and torch.equal(own[k], ref_sd[k])]
        assert sorted(set(ref_sd) - set(copied)) == [f"{head}.bias", f"{head}.weight"]  # everything but the head
    with pytest.raises(ValueError, match=r"1 key\(s\) of another shape \(file vs network\): conv1.weight \(64, 3, 7, 7\) vs \(64, 3, 3, 3\)"):
        build_network({"_target_": "tincap.models.resnet.ResNet"}, num_classes=10,
                      init=Initialisation(weights_path=str(tmp_path / "resnet.pth")))


def test_tincap_checkpoint_into_new_class_count_and_freeze(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_network(CNN_CFG, num_classes=30)
    ckpt = {"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()},
            "hyper_parameters": {"model_cfg": CNN_CFG}}
    path = tmp_path / "tin30.ckpt"
    torch.save(ckpt, path)
    net = build_network(CNN_CFG, num_classes=10, init=Initialisation(weights_path=str(path), freeze_backbone=True))
    assert torch.equal(net.features[0][0].weight, src.features[0][0].weight)
    assert net.head.out_features == 10
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    src = build_network(CNN_CFG, num_classes=30)
    path = tmp_path / "cnn.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()},
                "hyper_parameters": {"model_cfg": CNN_CFG}}, path)
    with pytest.raises(ValueError, match=r"cnn.ckpt is a checkpoint of a CNN network, but this run builds a ResNet"):
        build_network({"_target_": "tincap.models.resnet.ResNet"}, 10, Initialisation(weights_path=str(path)))
    torch.save(src.state_dict(), tmp_path / "bare.pth")  # no hparams: the shapes tell
    with pytest.raises(ValueError, match=r"bare.pth does not fit model ResNet"):
        build_network({"_target_": "tincap.models.resnet.ResNet"}, 10, Initialisation(weights_path=str(tmp_path / "bare.pth")))
    wide = {**CNN_CFG, "widths": [16, 32, 64, 128]}
    with pytest.raises(ValueError, match=r"key\(s\) of another shape \(file vs network\): features"):
        build_network(wide, 10, Initialisation(weights_path=str(path)))


def test_missing_or_garbage_weights_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"init.weights_path=.*nope.pth: file not found"):
        build_network(CNN_CFG, 3, Initialisation(weights_path=str(tmp_path / "nope.pth")))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk.pth is not a readable torch file .*expected a tincap .ckpt or a state-dict .pth"):
        build_network(CNN_CFG, 3, Initialisation(weights_path=str(tmp_path / "junk.pth")))


def test_unknown_model_name_is_clear() -> None:
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="tincap.models.vgg"):
        build_network({"_target_": "tincap.models.vgg.VGG"}, 3)


def test_download_weights_offline_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import ResNet18_Weights

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(ResNet18_Weights.DEFAULT.__class__, "get_state_dict", offline)
    with pytest.raises(UserError, match=r"could not download torchvision weights resnet18/DEFAULT.*weights_path"):
        ResNet(10, weights="DEFAULT")
