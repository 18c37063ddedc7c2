"""A VGG/ResNet-style CNN sized for 32-64 px images: conv-BN-ReLU stages, optional residual blocks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tincap.data.input_spec import InputSpec
from tincap.runtime.errors import InvalidInput


def conv_bn(cin: int, cout: int, batch_norm: bool = True, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm),
        nn.BatchNorm2d(cout) if batch_norm else nn.Identity(),
        nn.ReLU(inplace=True),
    )


def check_sizes(widths: Sequence[int], convs_per_stage: int, stem_stride: int, dropout: float) -> None:
    """Refuse sizes that would build a network failing only at its first forward pass, naming the key to fix."""
    if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
        raise InvalidInput(f"model.widths={list(widths)}: expected a non-empty list of channel counts >= 1, "
                           "e.g. model.widths=[32,64,128,256]")
    for key, value, example in (("convs_per_stage", convs_per_stage, 2), ("stem_stride", stem_stride, 1)):
        if not (isinstance(value, int) and value >= 1):
            raise InvalidInput(f"model.{key}={value}: expected an integer >= 1, e.g. model.{key}={example}")
    if not 0 <= dropout < 1:
        raise InvalidInput(f"model.dropout={dropout}: expected a probability in [0, 1), e.g. model.dropout=0.1")


class Residual(nn.Module):
    def __init__(self, width: int, convs: int, batch_norm: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(*[conv_bn(width, width, batch_norm) for _ in range(convs)])

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class CNN(nn.Module):
    """Stem conv (stride `stem_stride`; 2 downsamples in the conv itself, as MobileNet does) and an optional 2x2
    max-pool, then per stage: widen, (residual) convs, 2x2 max-pool; global pool, dropout, linear head."""

    spatial = True
    input_spec = InputSpec()  # any size; ImageNet mean/std

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (64, 128, 256, 512),
        convs_per_stage: int = 2,
        residual: bool = True,
        batch_norm: bool = True,
        dropout: float = 0.0,
        stem_pool: bool = True,
        stem_stride: int = 1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(widths, convs_per_stage, stem_stride, dropout)
        layers: list[nn.Module] = [conv_bn(in_channels, widths[0], batch_norm, stem_stride)]
        if stem_pool:
            layers.append(nn.MaxPool2d(2))
        prev = widths[0]
        for i, width in enumerate(widths):
            stage: list[nn.Module] = [conv_bn(prev, width, batch_norm)]
            extra = convs_per_stage - 1
            if residual and extra > 0:
                stage.append(Residual(width, extra, batch_norm))
            else:
                stage += [conv_bn(width, width, batch_norm) for _ in range(extra)]
            if i < len(widths) - 1:
                stage.append(nn.MaxPool2d(2))
            layers.append(nn.Sequential(*stage))
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(prev, num_classes)
        self.feature_dim = prev

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.pool(self.features(x))))

    @property
    def stem(self) -> nn.Conv2d:
        """The first conv, which sees the normalised pixels (`init.whiten_stem` initialises it from them)."""
        return self.features[0][0]

    @property
    def cam_layer(self) -> nn.Module:
        return self.features[-1]
