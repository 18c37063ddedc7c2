"""torchvision ResNet with a small-input stem (3x3 conv, no max-pool) for 32-64 px images."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet as tv

from tincap.data.input_spec import InputSpec
from tincap.models.pretrained import torchvision_weights
from tincap.runtime.errors import InvalidInput

_BLOCKS = {18: (tv.BasicBlock, [2, 2, 2, 2]), 34: (tv.BasicBlock, [3, 4, 6, 3]), 50: (tv.Bottleneck, [3, 4, 6, 3])}


class ResNet(tv.ResNet):
    """Same parameter names as torchvision's, so its state dicts load directly."""

    spatial = True
    input_spec = InputSpec()  # any size; ImageNet mean/std, as torchvision's weights expect

    def __init__(self, num_classes: int, depth: int = 18, small_input: bool = True, weights: str | None = None) -> None:
        if depth not in _BLOCKS:
            raise InvalidInput(f"model.depth={depth}: expected one of {sorted(_BLOCKS)}")
        block, layers = _BLOCKS[depth]
        super().__init__(block, layers, num_classes=1000 if weights else num_classes)
        if weights:
            self.load_state_dict(torchvision_weights(f"resnet{depth}", weights))
            self.fc = nn.Linear(self.fc.in_features, num_classes)
        if small_input:
            # Keep conv1's name: a pretrained 7x7 kernel is replaced, the rest of the network still loads.
            self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.feature_dim = self.fc.in_features
        if weights and not small_input:
            self.input_spec = InputSpec(size=224)  # as torchvision's weights were trained

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    @property
    def cam_layer(self) -> nn.Module:
        return self.layer4
