"""init.whiten_stem: the stem conv's filters whiten the training patches (airbench's initialisation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tincap.commands.train import train
from tincap.models.cnn import CNN
from tincap.models.initialisation import whiten_stem
from tincap.models.resnet import ResNet
from tincap.models.whitening import patch_covariance, whiten_conv, whitening_filters
from tincap.runtime.errors import InvalidInput


def correlated_images(n: int = 64, size: int = 12) -> torch.Tensor:
    """Smooth images whose channels are mixed, so that 3x3 patches are strongly correlated."""
    g = torch.Generator().manual_seed(0)
    base = F.avg_pool2d(torch.randn(n, 3, size + 2, size + 2, generator=g), 3, stride=1)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.5, 0.7]])
    return torch.einsum("dc,nchw->ndhw", mix, base) + 0.3


def test_patch_covariance_is_the_covariance_of_all_patches_in_any_chunks() -> None:
    x = correlated_images()
    patches = F.unfold(x.double(), 3).transpose(1, 2).reshape(-1, 27)
    expected = torch.cov(patches.T, correction=0)
    cov, count = patch_covariance([x[:10], x[10:50], x[50:]], 3)
    assert count == len(patches) == 64 * 10 * 10
    torch.testing.assert_close(cov, expected)


def test_whitening_filters_decorrelate_the_patches_to_unit_variance() -> None:
    x = correlated_images()
    cov, _ = patch_covariance([x], 3)
    filters = whitening_filters(cov, out_channels=20, kernel=3, eps=0.0)
    assert filters.shape == (20, 3, 3, 3)
    torch.testing.assert_close(filters[10:], -filters[:10])  # both signs, for the ReLU
    response = F.conv2d(x.double(), filters[:10].double()).transpose(0, 1).flatten(1)  # (10, N*h*w)
    torch.testing.assert_close(torch.cov(response, correction=0), torch.eye(10, dtype=torch.float64), atol=1e-4,
                               rtol=0)
    before = torch.cov(F.conv2d(x, torch.randn(10, 3, 3, 3)).transpose(0, 1).flatten(1))
    assert (before - torch.diag(before.diag())).abs().max() > 0.1  # random filters do not decorrelate


def test_a_wider_stem_keeps_its_own_init_beyond_the_patch_dimension() -> None:
    net = CNN(5, widths=(64, 8))
    before = net.stem.weight.detach().clone()
    assert whiten_conv(net.stem, [correlated_images()]) == 64 * 10 * 10
    assert not torch.equal(net.stem.weight[:54], before[:54])  # 27 directions, both signs
    assert torch.equal(net.stem.weight[54:], before[54:])


def test_whiten_stem_refuses_other_networks_and_loaded_weights() -> None:
    with pytest.raises(InvalidInput, match="only model=cnn has a stem conv to whiten, not model resnet"):
        whiten_stem(ResNet(5, depth=18), "resnet", [correlated_images()], "from scratch")
    with pytest.raises(InvalidInput, match="but the weights already come from tin30 checkpoint"):
        whiten_stem(CNN(5, widths=(8, 16)), "cnn", [correlated_images()], "tin30 checkpoint (a.ckpt)")


def test_a_run_with_a_whitened_stem_reports_it(compose_train) -> None:
    """End to end: the stem is whitened from the first epoch's training images (16 px under data.progressive)."""
    cfg = compose_train("data.n_per_class=4", "trainer.max_epochs=1", "model.widths=[16,32]", "init=whitened",
                        "data.progressive={min_size:16,ramp_start:0.5,ramp_end:1.0}", "trainer.precision=32")
    metrics, objects = train(cfg)
    train_images = len(objects["datamodule"].splits["train"].images)
    assert metrics["init"] == f"from scratch, stem whitened from {train_images * 14 * 14:,} training patches"
    assert 0.0 <= metrics["val/acc"] <= 1.0
