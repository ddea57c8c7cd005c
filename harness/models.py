"""Models: any timm CNN as a backbone, the small CPU default ``fer_cnn`` (registered with timm),
and :class:`FERNet`, the backbone → neck → pool → linear model every method trains.

Importing this module registers ``fer_cnn``, after which ``timm.create_model("fer_cnn", ...)``
builds it like any timm model. Nothing here downloads: ``pretrained`` weights come from a local
file (:mod:`harness.weights`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, ConvNormAct
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.weights import LoadReport, load_backbone_weights

# register_model appends to a module's __all__; declaring it keeps the public names explicit.
__all__ = ["FERNet", "FerCNN", "build_model", "fer_cnn", "fer_cnn_wide"]

# 16-32-64-128 keeps a FixMatch step (64 + 448 images at 48×48) near 1.5 s on 2 CPU threads;
# the 32-64-128-256 variant (fer_cnn_wide) takes ~5 s.
FER_CNN_WIDTHS = (16, 32, 64, 128)
PROBE_SIZE = 64  # side of the dummy image used to check a backbone's output (any CNN accepts it)


class FerCNN(nn.Module):
    """A 4-stage VGG-style CNN for small face crops (48×48 → a 6×6 map).

    Each stage is two 3×3 conv + BN + ReLU; a 2×2 max-pool precedes stages 2-4. It follows
    timm's model interface: ``forward_features`` (last feature map), ``forward_head``,
    ``reset_classifier``, ``num_features``, ``feature_info``; with ``num_classes=0,
    global_pool=""`` the forward pass returns the feature map.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 3,
        widths: Sequence[int] = FER_CNN_WIDTHS,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        prev = in_chans
        for i, width in enumerate(widths):
            pool: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            stages.append(
                nn.Sequential(
                    *pool,
                    ConvNormAct(prev, width, kernel_size=3, act_layer=nn.ReLU),
                    ConvNormAct(width, width, kernel_size=3, act_layer=nn.ReLU),
                )
            )
            self.feature_info.append({"num_chs": width, "reduction": 2**i, "module": f"stages.{i}"})
            prev = width
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def get_classifier(self) -> nn.Module:
        """The final linear layer (timm interface)."""
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` (0: no head) (timm interface)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, B × num_features × H/8 × W/8."""
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool, dropout and classify a feature map (pooled features if ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (or the feature map when built with ``num_classes=0, global_pool=""``)."""
        return self.forward_head(self.forward_features(x))


def _cfg() -> dict[str, Any]:
    """Input description for timm's data helpers; no weights exist, so no url / hub id."""
    return {
        "num_classes": 7,
        "input_size": (3, 48, 48),
        "pool_size": (6, 6),
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stages.0.0.conv",
        "classifier": "head.fc",
    }


# register_model reads this module-level name to attach each variant's cfg.
default_cfgs = generate_default_cfgs({"fer_cnn": _cfg(), "fer_cnn_wide": _cfg()})


def _create_fer_cnn(variant: str, pretrained: bool, **kwargs: Any) -> FerCNN:
    """Build a FerCNN through timm's builder (pretrained cfg, ``features_only`` support)."""
    if pretrained:
        raise ConfigError(
            f"{variant} has no pretrained weights; pass a local checkpoint with "
            "backbone.weights=/path/to/checkpoint.pth instead."
        )
    return build_model_with_cfg(
        FerCNN,
        variant,
        pretrained=False,
        feature_cfg={"flatten_sequential": True, "out_indices": (0, 1, 2, 3)},
        **kwargs,
    )


@register_model
def fer_cnn(pretrained: bool = False, **kwargs: Any) -> FerCNN:
    """The CPU default, widths 16-32-64-128 (``timm.create_model("fer_cnn", ...)``)."""
    return _create_fer_cnn("fer_cnn", pretrained, **{"widths": FER_CNN_WIDTHS, **kwargs})


@register_model
def fer_cnn_wide(pretrained: bool = False, **kwargs: Any) -> FerCNN:
    """fer_cnn at twice the width, 32-64-128-256: ~3.5x the CPU time per step."""
    return _create_fer_cnn("fer_cnn_wide", pretrained, **{"widths": (32, 64, 128, 256), **kwargs})


class FERNet(nn.Module):
    """backbone feature map -> neck (identity by default; methods may replace it, e.g. DTA+SNL's
    local attention + feature-map dropout) -> global average pool -> (dropout) -> linear."""

    backbone: nn.Module
    neck: nn.Module
    classifier: nn.Linear
    num_features: int
    num_classes: int

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        drop_rate: float = 0.0,
        neck: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone  # B×3×H×W → B×num_features×h×w
        self.neck = neck if neck is not None else nn.Identity()
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(num_features, num_classes)
        self.num_features = num_features
        self.num_classes = num_classes

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map after the neck, B × num_features × h × w."""
        return self.neck(self.backbone(x))

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, embedding)``: the embedding is the pooled feature, before dropout."""
        embedding = self.forward_features(x).mean(dim=(2, 3))
        return self.classifier(self.dropout(embedding)), embedding

    def forward(self, x: Tensor) -> Tensor:
        """Logits, B × num_classes."""
        return self.forward_with_embedding(x)[0]


def build_model(
    name: str,
    num_classes: int,
    *,
    weights: str | None = None,
    trust_weights: bool = False,
    pretrained: bool = False,
    drop_rate: float = 0.0,
) -> tuple[FERNet, LoadReport | None]:
    """A :class:`FERNet` on the timm backbone ``name``, with local ``weights`` loaded if given.

    ``name`` is any timm CNN whose last feature map is 4-D (``resnet18``, ``resnet50``,
    ``fer_cnn``, ...). ``pretrained=True`` is refused: the harness never downloads, so weights
    must come from a local file, loaded weights-only unless ``trust_weights``
    (:func:`harness.weights.load_backbone_weights`). Returns the model and the weight-loading
    report (``None`` without ``weights``).
    """
    if pretrained:
        raise ConfigError(
            f"backbone.pretrained=true would download {name} weights from a model hub, which the "
            "harness never does (compute nodes often cannot reach one). Download the checkpoint "
            "yourself and pass it with backbone.weights=/path/to/checkpoint.pth "
            "(and backbone.pretrained=false)."
        )
    if num_classes < 1:
        raise ConfigError(f"build_model needs num_classes >= 1, got {num_classes}.")
    _check_name(name)
    # pretrained=False always: timm must never try to reach the hub.
    backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    report = load_backbone_weights(backbone, weights, trust=trust_weights) if weights else None
    num_features = _feature_channels(backbone, name)
    return FERNet(backbone, num_features, num_classes, drop_rate=drop_rate), report


def _check_name(name: str) -> None:
    """Refuse hub-sourced names and unknown architectures, suggesting close timm names."""
    if ":" in name:  # "hf-hub:org/model" and "local-dir:" make timm fetch configs/weights
        raise ConfigError(
            f"backbone.name={name!r}: only plain timm architecture names are accepted "
            "(e.g. resnet18); load weights with backbone.weights=/path/to/checkpoint.pth."
        )
    if timm.is_model(name):
        return
    known = timm.list_models()
    close = list(
        dict.fromkeys(difflib.get_close_matches(name, known, n=5) + timm.list_models(f"*{name}*"))
    )[:5]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"backbone.name={name!r} is not a timm model (nor fer_cnn).{hint} "
        "timm.list_models('pattern*') lists them all."
    )


def _feature_channels(backbone: nn.Module, name: str) -> int:
    """Channels of the backbone's output, checked on a dummy image to be a B×C×H×W map.

    Measured rather than read from ``num_features``: some timm heads (e.g. MobileNetV3's
    ``conv_head``) change the width even with ``num_classes=0, global_pool=""``.
    """
    was_training = backbone.training
    backbone.eval()  # BN in train mode would reject a single 1×1 feature map
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
    except Exception as err:
        raise ConfigError(
            f"backbone {name!r} cannot run on a {PROBE_SIZE}×{PROBE_SIZE} image ({err}); "
            "the harness needs a CNN backbone."
        ) from err
    finally:
        backbone.train(was_training)
    if not isinstance(out, Tensor) or out.ndim != 4:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(
            f"backbone {name!r} gives {shape}, not a B×C×H×W feature map: the harness needs a "
            "CNN backbone (e.g. resnet18, resnet50, fer_cnn)."
        )
    return int(out.shape[1])
