"""Models and weights: fer_cnn through timm, FERNet's neck and embedding, build_model's guards,
and loading real checkpoint files in the shapes researchers actually have."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.models import FERNet, build_model
from harness.weights import LoadReport, load_backbone_weights


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, Tensor]:
    """A resnet18 state_dict with its 1000-class ImageNet head, as checkpoints ship it."""
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=1000).state_dict()


def test_fer_cnn_is_a_timm_model() -> None:
    x = torch.randn(2, 3, 48, 48)
    trunk = timm.create_model("fer_cnn", num_classes=0, global_pool="")
    assert trunk(x).shape == (2, trunk.num_features, 6, 6)
    assert trunk.num_features == 128
    model = timm.create_model("fer_cnn", num_classes=7, drop_rate=0.3)
    assert model(x).shape == (2, 7)
    assert model.head.drop.p == pytest.approx(0.3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 128)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 128, 6, 6)
    wide = timm.create_model("fer_cnn_wide", num_classes=0, global_pool="")
    assert wide(x).shape == (2, 256, 6, 6)
    features = timm.create_model("fer_cnn", features_only=True)
    assert [f.shape[1:] for f in features(x)] == [
        (16, 48, 48),
        (32, 24, 24),
        (64, 12, 12),
        (128, 6, 6),
    ]
    with pytest.raises(ConfigError, match=r"backbone\.weights"):
        timm.create_model("fer_cnn", pretrained=True)


class ZeroNeck(nn.Module):
    """A neck that erases the feature map: logits must then be the classifier's bias."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


def test_fernet_uses_its_neck_and_returns_the_pooled_embedding() -> None:
    model, report = build_model("fer_cnn", 5)
    assert report is None
    model.eval()
    x = torch.randn(3, 3, 48, 48)
    logits, embedding = model.forward_with_embedding(x)
    assert logits.shape == (3, 5)
    assert embedding.shape == (3, model.num_features)
    torch.testing.assert_close(embedding, model.backbone(x).mean(dim=(2, 3)))
    torch.testing.assert_close(model(x), logits)

    model.neck = ZeroNeck()
    logits, embedding = model.forward_with_embedding(x)
    assert torch.count_nonzero(embedding) == 0
    torch.testing.assert_close(logits, model.classifier.bias.expand(3, 5))


def test_fernet_dropout_only_in_training() -> None:
    model = FERNet(nn.Conv2d(3, 8, 3), num_features=8, num_classes=2, drop_rate=0.5)
    x = torch.randn(4, 3, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout draws differ
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_build_model_resnet18_at_32px() -> None:
    model, report = build_model("resnet18", 7, drop_rate=0.25)
    assert report is None
    assert isinstance(model, FERNet)
    assert (model.num_features, model.num_classes) == (512, 7)
    assert model.dropout.p == pytest.approx(0.25)
    logits, embedding = model.forward_with_embedding(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert embedding.shape == (2, 512)


def test_pretrained_true_is_refused_without_download() -> None:
    with pytest.raises(ConfigError, match=r"backbone\.weights=/path/to/checkpoint\.pth"):
        build_model("resnet18", 7, pretrained=True)


def test_unknown_or_hub_backbone_names() -> None:
    with pytest.raises(ConfigError, match=r"not a timm model.*resnet18"):
        build_model("resnt18", 7)
    with pytest.raises(ConfigError, match="plain timm architecture names"):
        build_model("hf-hub:timm/resnet18.a1_in1k", 7)


def _assert_backbone_equals(model: FERNet, state: dict[str, Tensor]) -> None:
    own = model.backbone.state_dict()
    for key, value in own.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("shape", ["bare", "state_dict", "model", "module_prefix", "safetensors"])
def test_resnet18_checkpoint_shapes_load_exactly(
    shape: str, resnet18_state: dict[str, Tensor], tmp_path: Path
) -> None:
    path = tmp_path / ("w.safetensors" if shape == "safetensors" else "w.pth")
    if shape == "safetensors":
        save_file(resnet18_state, str(path))
    elif shape == "module_prefix":
        torch.save({f"module.{k}": v for k, v in resnet18_state.items()}, path)
    elif shape == "bare":
        torch.save(resnet18_state, path)
    else:
        torch.save({shape: resnet18_state, "epoch": 90}, path)

    model, report = build_model("resnet18", 7, weights=str(path))
    assert isinstance(report, LoadReport)
    _assert_backbone_equals(model, resnet18_state)
    prefix = "module." if shape == "module_prefix" else ""
    assert set(report.unexpected) == {f"{prefix}fc.weight", f"{prefix}fc.bias"}  # file's names
    assert report.missing == ()
    assert report.skipped_shape == ()
    assert len(report.loaded) == len(model.backbone.state_dict())
    assert f"loaded {len(report.loaded)}/{len(report.loaded)}" in report.summary()
    assert "ignored from file 2" in report.summary()


def test_head_of_wrong_shape_is_skipped_and_reported(
    resnet18_state: dict[str, Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "imagenet.pth"
    torch.save({"model_state_dict": resnet18_state}, path)
    seven_class = timm.create_model("resnet18", pretrained=False, num_classes=7)
    fresh_fc = seven_class.fc.weight.detach().clone()
    report = load_backbone_weights(seven_class, path)
    assert set(report.skipped_shape) == {"fc.weight", "fc.bias"}
    assert "shape-mismatch skipped 2" in report.summary()
    torch.testing.assert_close(seven_class.fc.weight, fresh_fc)  # left as initialised
    torch.testing.assert_close(seven_class.conv1.weight, resnet18_state["conv1.weight"])


def test_partial_checkpoint_reports_missing_and_casts_dtype(tmp_path: Path) -> None:
    source = timm.create_model("fer_cnn", num_classes=0, global_pool="").state_dict()
    half = {f"backbone.{k}": v.half() for k, v in source.items() if not k.startswith("stages.3")}
    path = tmp_path / "partial.pt"
    torch.save({"net": half}, path)
    target = timm.create_model("fer_cnn", num_classes=0, global_pool="")
    report = load_backbone_weights(target, path)
    assert report.missing and all(k.startswith("stages.3") for k in report.missing)
    assert "missing" in report.summary()
    loaded = target.state_dict()["stages.0.0.conv.weight"]
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, source["stages.0.0.conv.weight"].half().float())


def test_research_checkpoint_objects_load_weights_only(tmp_path: Path) -> None:
    # What research checkpoints carry besides tensors (training arguments, numpy metrics and
    # arrays) only rebuilds data: loaded weights-only, no warning, no trust needed.
    source = timm.create_model("fer_cnn", num_classes=0, global_pool="").state_dict()
    path = tmp_path / "with_args.pth"
    extras = {
        "args": argparse.Namespace(lr=0.1),
        "best_acc": np.float64(0.8),
        "epoch": np.int64(90),
        "dtype": np.dtype("float32"),
        "hist": np.arange(3),
    }
    torch.save({"state_dict": source, **extras}, path)
    target = timm.create_model("fer_cnn", num_classes=0, global_pool="")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = load_backbone_weights(target, path)
    assert len(report.loaded) == len(source)


class _Planted:
    """A pickle that runs code when unpickled: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_planted_weights_file_runs_no_code_unless_trusted(tmp_path: Path) -> None:
    source = timm.create_model("fer_cnn", num_classes=0, global_pool="").state_dict()
    path, marker = tmp_path / "planted.pth", tmp_path / "ran"
    torch.save({"state_dict": source, "payload": _Planted(marker)}, path)
    target = timm.create_model("fer_cnn", num_classes=0, global_pool="")
    refused = r"planted\.pth holds Python objects .*exec.*backbone\.trust_weights_file=true"
    with pytest.raises(ConfigError, match=refused):
        load_backbone_weights(target, path)
    assert not marker.exists(), "loading the planted file ran its code"
    # The user's explicit word that they trust the file: then (and only then) it is unpickled.
    with pytest.warns(UserWarning, match="full unpickling"):
        report = load_backbone_weights(target, path, trust=True)
    assert marker.exists() and len(report.loaded) == len(source)


@pytest.mark.slow
def test_trust_weights_file_is_refused_from_the_command_line_through_bench(
    tmp_path: Path, tiny: list[str]
) -> None:
    source = timm.create_model("fer_cnn", num_classes=0, global_pool="").state_dict()
    path, marker = tmp_path / "planted.pth", tmp_path / "ran"
    torch.save({"state_dict": source, "payload": _Planted(marker)}, path)
    from harness.plan import build_plan
    from harness.worker import run_spec

    (spec,) = build_plan("supervised", "25%", "0", "synthfer", [*tiny, f"backbone.weights={path}"])
    with pytest.raises(ConfigError, match="trust_weights_file"):
        run_spec(spec, tmp_path / "results", show_progress=False)
    assert not marker.exists()
    (trusted,) = build_plan(
        "supervised", "25%", "0", "synthfer",
        [*tiny, f"backbone.weights={path}", "backbone.trust_weights_file=true"],
    )  # fmt: skip
    assert trusted.run_id == spec.run_id, "trusting a file does not change what the run is"


def test_missing_and_non_checkpoint_files_are_clear_errors(tmp_path: Path) -> None:
    backbone = timm.create_model("fer_cnn", num_classes=0, global_pool="")
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=r"nope\.pth does not exist: backbone\.weights must"):
        load_backbone_weights(backbone, missing)
    with pytest.raises(ConfigError, match="is a directory"):
        load_backbone_weights(backbone, tmp_path)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ConfigError, match=r"notes\.pth is not a PyTorch checkpoint"):
        load_backbone_weights(backbone, text)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_backbone_weights(backbone, bad_st)
    no_tensors = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "best_acc": 0.8}, no_tensors)
    with pytest.raises(ConfigError, match="keys epoch, best_acc but no tensors"):
        load_backbone_weights(backbone, no_tensors)


def test_checkpoint_of_another_architecture_is_an_error_not_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "fer_cnn.pth"
    torch.save(timm.create_model("fer_cnn", num_classes=7).state_dict(), path)
    with pytest.raises(ConfigError, match=r"no tensor .* matches.*stages\.0.*conv1\.weight"):
        build_model("resnet18", 7, weights=str(path))
