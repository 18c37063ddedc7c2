"""torchvision AlexNet, with a stride-2 first conv so 64x64 inputs keep enough resolution."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.alexnet import AlexNet as TorchvisionAlexNet

from tincap.data.input_spec import InputSpec
from tincap.models.pretrained import torchvision_weights


class AlexNet(TorchvisionAlexNet):
    """Same parameter names and shapes as torchvision's; `small_input` only changes conv1's stride and padding."""

    spatial = True
    input_spec = InputSpec()  # any size; ImageNet mean/std, as torchvision's weights expect

    def __init__(self, num_classes: int, small_input: bool = True, dropout: float = 0.5, weights: str | None = None) -> None:
        super().__init__(num_classes=1000 if weights else num_classes, dropout=dropout)
        if weights:
            self.load_state_dict(torchvision_weights("alexnet", weights))
            self.classifier[6] = nn.Linear(4096, num_classes)
        if small_input:
            conv1 = self.features[0]
            conv1.stride, conv1.padding = (2, 2), (5, 5)
        self.feature_dim = 256
        if weights and not small_input:
            self.input_spec = InputSpec(size=224)  # as torchvision's weights were trained

    @property
    def head(self) -> nn.Linear:
        return self.classifier[6]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    @property
    def cam_layer(self) -> nn.Module:
        # conv5's ReLU, not conv5: the in-place ReLU would overwrite the conv output Grad-CAM's hook keeps
        return self.features[11]
