"""DTA+SNL: thresholds after known batches, update order, masks, complementary labels, L_neg,
the attention + feature-dropout neck, switches, config and exact resume."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from method_fakes import (
    LogitsNet,
    TinyNet,
    ce,
    full_config,
    method_config,
    setup,
    tiny_batches,
)
from torch import Tensor, nn

from harness.config import compose_config
from harness.errors import ConfigError
from harness.method import LabelledBatch, StepContext, UnlabelledBatch
from harness.registry import get_method
from methods.dta_snl import (
    DTASNL,
    DTAState,
    LocalAttentionDropout,
    complementary_labels,
    dta_estimates,
    dta_thresholds,
    dta_update,
    log_one_minus_softmax,
    negative_loss,
    random_cell_dropout,
)

# Config whose arithmetic is easy to follow: m = 0.25 so one batch moves g and s a lot. The
# hand-checked figures below are revision 1's (g and s from 1/C, no bias correction).
HAND = full_config(
    "dta_snl", m=0.25, tau_min=0.5, tau_max=0.95, tau_neg=0.0625, lambda_u=2.0, lambda_neg=0.5,
    local_attention=False, feature_drop_p=0.0, bias_correction=False,
)  # fmt: skip

# Teacher weak-view probabilities of three steps (4 unlabelled samples each).
BATCH1 = [[0.90, 0.06, 0.04], [0.30, 0.65, 0.05], [0.505, 0.465, 0.03], [0.40, 0.35, 0.25]]
BATCH2 = [[0.20, 0.75, 0.05], [0.10, 0.85, 0.05], [0.60, 0.30, 0.10], [0.33, 0.33, 0.34]]
BATCH3 = [[0.05, 0.05, 0.90], [0.70, 0.20, 0.10], [0.20, 0.20, 0.60], [0.45, 0.45, 0.10]]
STRONG = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.5, 1.0], [0.0, 0.0, 0.0]]
HIDDEN = [0, 2, 2, 1]


def reference_dta(
    batches: list[list[list[float]]],
    m: float,
    mapping: str,
    lo: float,
    hi: float,
    bias_correction: bool = False,
):
    """Plain-Python DTA: (g, s, τ) after the batches. Revision 1: from g₀ = s₀ = 1/C, read as
    they are; revision 2 (``bias_correction``): from 0, read as g/(1−m^t) and s/(1−m^t)."""
    c = len(batches[0][0])
    start = 0.0 if bias_correction else 1 / c
    g, s = start, [start] * c
    for batch in batches:
        g = m * g + (1 - m) * sum(max(row) for row in batch) / len(batch)
        s = [m * s[k] + (1 - m) * sum(row[k] for row in batch) / len(batch) for k in range(c)]
    if bias_correction:
        correction = 1 - m ** len(batches)
        g, s = g / correction, [v / correction for v in s]
    beta = [v / max(s) for v in s]
    mapped = [b / (2 - b) for b in beta] if mapping == "convex" else beta
    return g, s, [min(max(g * v, lo), hi) for v in mapped]


def ctx_for(weak_probs: list[list[float]], strong: list[list[float]] = STRONG) -> StepContext:
    """A step whose teacher softmax is ``weak_probs`` (LogitsNet on log p)."""
    unlabelled = UnlabelledBatch(
        torch.tensor(weak_probs).log(),
        torch.tensor(strong),
        torch.arange(len(weak_probs)),
        torch.tensor(HIDDEN[: len(weak_probs)]),
    )
    labelled = LabelledBatch(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([1]))
    return StepContext(LogitsNet(), LogitsNet().eval(), labelled, unlabelled, 0, 10, 3)


def _thresholds(state: DTAState, mapping: str, lo: float, hi: float, m: float = 0.25) -> Tensor:
    return dta_thresholds(*dta_estimates(state, m, bias_correction=False), mapping, lo, hi)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_thresholds_after_a_known_sequence_of_batches(bias_correction: bool) -> None:
    state = DTAState.initial(3, bias_correction)
    for i, batch in enumerate((BATCH1, BATCH2, BATCH3), start=1):
        state = dta_update(state, torch.tensor(batch), 0.25)
        g, s, tau = reference_dta(
            [BATCH1, BATCH2, BATCH3][:i], 0.25, "convex", 0.5, 0.95, bias_correction
        )
        g_hat, s_hat = dta_estimates(state, 0.25, bias_correction)
        assert int(state.t) == i
        assert float(g_hat) == pytest.approx(g, abs=1e-6)
        assert s_hat.tolist() == pytest.approx(s, abs=1e-6)
        thresholds = dta_thresholds(g_hat, s_hat, "convex", 0.5, 0.95)
        assert thresholds.tolist() == pytest.approx(tau, abs=1e-6)


def test_revision_1_thresholds_by_hand() -> None:
    # hand-checked after batch 1: g = 0.25/3 + 0.75 * mean(0.9, 0.65, 0.505, 0.4)
    first = dta_update(DTAState.initial(3, bias_correction=False), torch.tensor(BATCH1), 0.25)
    assert float(first.g) == pytest.approx(0.25 / 3 + 0.75 * 0.61375, abs=1e-6)
    # unclamped, class 0 (largest s, β = 1) gets g itself; the linear map differs from convex
    wide = _thresholds(first, "convex", 0.0, 1.0)
    assert float(wide[0]) == pytest.approx(float(first.g), abs=1e-6)
    _, _, linear = reference_dta([BATCH1], 0.25, "linear", 0.0, 1.0)
    assert _thresholds(first, "linear", 0.0, 1.0).tolist() == pytest.approx(linear, abs=1e-6)
    assert not torch.allclose(_thresholds(first, "linear", 0.0, 1.0), wide)
    # the clamp: tau_min lifts the small classes, tau_max caps
    assert _thresholds(first, "convex", 0.5, 0.95).tolist()[1:] == [0.5, 0.5]
    capped = _thresholds(first, "convex", 0.0, 0.3).tolist()
    assert capped[:2] == pytest.approx([0.3, 0.3]) and capped[2] < 0.3


def test_first_step_updates_statistics_before_masking() -> None:
    method = DTASNL(HAND, setup())
    out = method.training_loss(ctx_for(BATCH1))
    _, _, tau = reference_dta([BATCH1], 0.25, "convex", 0.5, 0.95)
    assert out.diagnostics["threshold"].tolist() == pytest.approx(tau, abs=1e-6)
    # sample 2 (p̂ = 0.505) would pass the initial thresholds (all 0.5) but not the updated
    # τ_0 ≈ 0.544: the mask uses the statistics *after* this batch
    assert tau[0] > 0.505 > 0.5
    assert out.diagnostics["mask_rate"] == 0.5
    assert out.diagnostics["pseudo_label_acc"] == 0.5  # sample 0 right (0), sample 1 wrong (1≠2)
    assert out.diagnostics["stage_confidence"] == pytest.approx(0.25 / 3 + 0.75 * 0.61375, abs=1e-6)


def test_known_step_loss_and_negative_learning_diagnostics() -> None:
    out = DTASNL(HAND, setup()).training_loss(ctx_for(BATCH1))
    # rejected: samples 2 (pairs: class 2, p = 0.03) and 3 (no p < 0.0625: nothing)
    assert out.diagnostics["neg_pairs"] == 1.0
    assert out.diagnostics["neg_error_rate"] == 1.0  # class 2 is sample 2's true class
    sup = math.log(math.exp(2.0) + 2.0)
    pos = (ce(STRONG[0], 0) + ce(STRONG[1], 1)) / 4  # divided by the batch size, not the mask
    row = STRONG[2]
    q = math.exp(row[2]) / sum(math.exp(v) for v in row)
    neg = -math.log(1 - q)
    assert out.diagnostics["loss_sup"] == pytest.approx(sup, rel=1e-5)
    assert out.diagnostics["loss_unsup"] == pytest.approx(pos, rel=1e-5)
    assert out.diagnostics["loss_neg"] == pytest.approx(neg, rel=1e-5)
    assert out.loss.item() == pytest.approx(sup + 2.0 * pos + 0.5 * neg, rel=1e-5)


def test_dta_off_uses_tau_max_for_every_class() -> None:
    method = DTASNL({**HAND, "dta": False, "tau_max": 0.875}, setup())
    out = method.training_loss(ctx_for(BATCH1))
    assert out.diagnostics["threshold"].tolist() == [0.875] * 3
    assert out.diagnostics["mask_rate"] == 0.25  # only p̂ = 0.9 passes
    assert method.summary()["threshold"] == [0.875] * 3


def test_snl_off_removes_the_negative_term() -> None:
    on = DTASNL(HAND, setup()).training_loss(ctx_for(BATCH1))
    ctx = ctx_for(BATCH1)
    off = DTASNL({**HAND, "snl": False}, setup()).training_loss(ctx)
    assert "loss_neg" not in off.diagnostics and "neg_pairs" not in off.diagnostics
    sup, pos = off.diagnostics["loss_sup"], off.diagnostics["loss_unsup"]
    assert off.loss.item() == pytest.approx(sup + 2.0 * pos, rel=1e-6)
    assert on.loss.item() == pytest.approx(off.loss.item() + 0.5 * on.diagnostics["loss_neg"])
    # no gradient reaches the rejected sample 2's strong view (its only term was L_neg)
    strong = ctx.unlabelled.strong.clone().requires_grad_(True)
    ctx.unlabelled.strong = strong
    DTASNL({**HAND, "snl": False}, setup()).training_loss(ctx).loss.backward()
    assert strong.grad[2].abs().sum() == 0 and strong.grad[0].abs().sum() > 0


def test_complementary_label_selection() -> None:
    probs = torch.tensor(
        [
            [0.90, 0.06, 0.04],  # accepted: no pairs even though p < tau_neg
            [0.60, 0.38, 0.02],  # rejected: class 2 only
            [0.40, 0.3, 0.3],  # rejected, no class below tau_neg: nothing
            [0.30, 0.30, 0.40],  # rejected, p̂ < tau_neg = 0.5: every class but ŷ = 2
            [0.6875, 0.25, 0.0625],  # rejected: p = tau_neg exactly is not below it
        ]
    )
    mask = torch.tensor([True, False, False, False, False])
    pseudo = probs.argmax(dim=-1)
    pairs = complementary_labels(probs, mask, pseudo, 0.0625)
    assert pairs.nonzero().tolist() == [[1, 2]]
    pairs = complementary_labels(probs, mask, pseudo, 0.5)
    assert [k for i, k in pairs.nonzero().tolist() if i == 3] == [0, 1]  # never ŷ
    assert not pairs[0].any()


def test_negative_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [100.0, 0.0, 0.0]])
    pairs = torch.tensor([[True, True, False], [False, False, True], [False, False, False]])
    soft0 = [math.exp(v) / (1 + math.e + math.e**2) for v in (0.0, 1.0, 2.0)]
    expected = -(math.log(1 - soft0[0]) + math.log(1 - soft0[1]) + math.log(2 / 3)) / 3
    assert negative_loss(logits, pairs).item() == pytest.approx(expected, rel=1e-5)
    assert negative_loss(logits, torch.zeros_like(pairs)).item() == 0.0
    # q ≈ 1 on a complementary label: exact in log space, −log(2 / (e¹⁰⁰ + 2)) ≈ 99.31
    sure = torch.tensor([[False] * 3, [False] * 3, [True, False, False]])
    assert negative_loss(logits, sure).item() == pytest.approx(100 - math.log(2), rel=1e-6)


def test_attention_enhancement_with_fixed_weights() -> None:
    neck = LocalAttentionDropout(2, 1, local_attention=True, drop_p=0.0, grid=2)
    first, second = neck.attention[0], neck.attention[2]
    with torch.no_grad():
        first.weight.copy_(torch.tensor([1.0, -2.0]).view(1, 2, 1, 1))
        first.bias.fill_(0.5)
        second.weight.fill_(3.0)
        second.bias.fill_(-1.0)
    x = torch.randn(2, 2, 3, 4)
    a = neck.attention_map(x)
    assert a.shape == (2, 1, 3, 4)
    hidden = (x[:, 0] - 2 * x[:, 1] + 0.5).clamp_min(0)
    expected_a = torch.sigmoid(3 * hidden - 1).unsqueeze(1)
    torch.testing.assert_close(a, expected_a)
    torch.testing.assert_close(neck(x), x * (1 + expected_a))
    assert not torch.equal(neck(x), x)


def test_feature_dropout_zeroes_one_whole_cell_and_rescales() -> None:
    torch.manual_seed(0)
    x = torch.ones(16, 3, 4, 4)
    out = random_cell_dropout(x, 1.0, 2)
    for sample in out:
        zero = sample == 0
        assert torch.equal(zero, zero[:1].expand_as(zero))  # same cell in every channel
        cells = [zero[0, r : r + 2, c : c + 2] for r in (0, 2) for c in (0, 2)]
        assert sorted(bool(cell.all()) for cell in cells) == [False, False, False, True]
        assert int(zero[0].sum()) == 4
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 4 / 3))  # 1 / (1 - 1/4)
    # same seed, same cells: it draws from torch's global RNG
    torch.manual_seed(1)
    a = random_cell_dropout(x, 0.5, 2)
    # inverted-dropout rescale: every kept position, dropped sample or not, is 1 / (1 - p/g²)
    undropped = (a != 0).flatten(1).all(dim=1)
    assert 0 < int(undropped.sum()) < len(a)
    torch.testing.assert_close(a[a != 0], torch.full_like(a[a != 0], 8 / 7))
    torch.manual_seed(1)
    assert torch.equal(a, random_cell_dropout(x, 0.5, 2))


@pytest.mark.parametrize("size", [4, 3])
def test_feature_dropout_is_unbiased_per_position(size: int) -> None:
    torch.manual_seed(0)
    x = torch.ones(20000, 1, size, size)
    out = random_cell_dropout(x, 0.5, 2)
    zero_rate = (out == 0).float().mean(dim=0)  # every position: p / grid² = 1/8
    torch.testing.assert_close(zero_rate, torch.full_like(zero_rate, 1 / 8), atol=0.01, rtol=0)
    # std of each position's mean ≈ 0.0027: 0.015 is > 5 sigma, and 0.875 (no rescale) fails
    mean = out.mean(dim=0)
    torch.testing.assert_close(mean, torch.ones_like(mean), atol=0.015, rtol=0)


def test_neck_is_identity_at_eval_and_switches_remove_components() -> None:
    x = torch.randn(4, 8, 4, 4)
    drop_only = LocalAttentionDropout(8, 8, local_attention=False, drop_p=1.0, grid=2)
    assert drop_only.attention is None
    assert torch.equal(drop_only.eval()(x), x)
    assert not torch.equal(drop_only.train()(x), x)
    no_drop = LocalAttentionDropout(8, 8, local_attention=True, drop_p=0.0, grid=2).train()
    torch.testing.assert_close(no_drop(x), x * (1 + no_drop.attention_map(x)))
    # wrap_model: installs the neck (hidden width max(8, C // reduction)), or nothing at all
    wrapped = DTASNL(full_config("dta_snl", attention_reduction=8), setup()).wrap_model(
        TinyNet(channels=128)
    )
    assert isinstance(wrapped.neck, LocalAttentionDropout)
    assert wrapped.neck.attention[0].out_channels == 16
    assert wrapped.neck.drop_p == 0.5 and wrapped.neck.grid == 2
    plain = DTASNL(full_config("dta_snl", local_attention=False, feature_drop_p=0.0), setup())
    assert isinstance(plain.wrap_model(TinyNet()).neck, nn.Identity)
    # the EMA teacher (a deep copy in eval mode) gets the same neck, without dropout
    teacher = copy.deepcopy(wrapped).eval()
    images = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(teacher(images), wrapped.eval()(images))


@pytest.mark.parametrize("bias_correction", [False, True])
def test_state_survives_a_checkpoint_exactly(bias_correction: bool, tmp_path: Path) -> None:
    config = {**HAND, "bias_correction": bias_correction}
    method = DTASNL(config, setup())
    method.training_loss(ctx_for(BATCH1))
    method.training_loss(ctx_for(BATCH2))
    torch.save(method.state_dict(), tmp_path / "state.pt")
    restored = DTASNL(config, setup())
    restored.load_state_dict(torch.load(tmp_path / "state.pt"))
    a, b = method.training_loss(ctx_for(BATCH3)), restored.training_loss(ctx_for(BATCH3))
    assert a.loss.item() == b.loss.item()
    assert torch.equal(a.diagnostics["threshold"], b.diagnostics["threshold"])
    assert a.diagnostics["stage_confidence"] == b.diagnostics["stage_confidence"]
    for key, value in method.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])
    _, _, tau = reference_dta([BATCH1, BATCH2, BATCH3], 0.25, "convex", 0.5, 0.95, bias_correction)
    assert restored.summary()["threshold"] == pytest.approx(tau, abs=1e-6)
    assert int(torch.load(tmp_path / "state.pt")["t"]) == 2 and int(restored.state.t) == 3
    state = method.state_dict()
    state["s"].fill_(7.0)  # a copy: the method is unchanged
    assert float(method.state.s.max()) < 1
    with pytest.raises(ValueError, match="shape"):
        DTASNL(HAND, setup(num_classes=4)).load_state_dict(method.state_dict())


def test_student_pass_holds_the_weak_view_for_batch_norm() -> None:
    # One student pass over labelled + weak + strong (FixMatch's), not labelled + strong: the
    # running batch-norm statistics must not be those of strongly augmented images.
    torch.manual_seed(0)
    method = DTASNL(full_config("dta_snl"), setup())
    model = method.wrap_model(TinyNet())
    teacher = copy.deepcopy(model).eval()
    labelled, unlabelled = tiny_batches()
    student_batches: list[Tensor] = []
    model.register_forward_pre_hook(lambda _, args: student_batches.append(args[0]))
    method.training_loss(StepContext(model, teacher, labelled, unlabelled, 0, 10, 3))
    assert len(student_batches) == 1
    expected = torch.cat([labelled.images, unlabelled.weak, unlabelled.strong])
    assert torch.equal(student_batches[0], expected)


def test_config_file_defaults_registry_and_balanced_sampling_link() -> None:
    text, block = method_config("dta_snl")
    assert text.startswith("# @package _global_")
    assert block["name"] == "dta_snl"
    spec = {"m": 0.999, "bias_correction": True, "mapping": "convex", "tau_min": 0.5,
            "tau_max": 0.95, "lambda_u": 1.0, "tau_neg": 0.05, "lambda_neg": 1.0, "dta": True,
            "snl": True, "local_attention": True, "feature_drop_p": 0.5, "feature_drop_grid": 2,
            "balanced_sampling": True}  # fmt: skip
    assert {k: block[k] for k in spec} == spec
    assert isinstance(get_method("dta_snl").cls(block, setup()), DTASNL)
    # data.balanced_sampling follows method.balanced_sampling through the interpolation
    assert compose_config(["method=dta_snl"])["data"]["balanced_sampling"] is True
    off = compose_config(["method=dta_snl", "method.balanced_sampling=false"])
    assert off["data"]["balanced_sampling"] is False
    for bad in ({"mapping": "concave"}, {"tau_min": 0.9, "tau_max": 0.5}, {"feature_drop_grid": 1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            DTASNL({**block, **bad}, setup())
    with pytest.raises(ConfigError, match=r"method\.tau_neg is missing"):
        DTASNL({k: v for k, v in block.items() if k != "tau_neg"}, setup())


# Revision 1's outputs, recorded with the code of commit eb1400f (before revision 2) by four
# steps of ``_pinned_steps(bias_correction=False)``: (loss, thresholds, g, mask rate, L_neg).
REVISION_1 = [
    (2.0388717651367188, [0.2417597472667694, 0.3017086088657379, 0.37302401661872864],
     0.37302401661872864, 1.0, 0.0),
    (2.260873794555664, [0.1993703842163086, 0.2870526909828186, 0.399777889251709],
     0.399777889251709, 0.875, 0.2814908027648926),
    (2.1765902042388916, [0.18772435188293457, 0.2828587293624878, 0.40850022435188293],
     0.40850022435188293, 0.75, 0.2978194057941437),
    (2.1187307834625244, [0.17278258502483368, 0.2796649634838104, 0.4195976257324219],
     0.4195976257324219, 0.75, 0.29765745997428894),
]  # fmt: skip
REVISION_1_S = [0.24477238953113556, 0.33562999963760376, 0.4195976257324219]


def _pinned_steps(bias_correction: bool) -> tuple[DTASNL, list[tuple]]:
    """Four steps of a seeded TinyNet with fast statistics (m = 0.5) and no lower clamp."""
    cfg = full_config("dta_snl", m=0.5, tau_min=0.0, tau_neg=0.3, bias_correction=bias_correction)
    torch.manual_seed(0)
    method = DTASNL(cfg, setup())
    model = method.wrap_model(TinyNet())
    teacher = copy.deepcopy(model).eval()
    outputs = []
    for step in range(4):
        labelled, unlabelled = tiny_batches(8 * step)
        out = method.training_loss(StepContext(model, teacher, labelled, unlabelled, step, 10, 3))
        d = out.diagnostics
        outputs.append((out.loss.item(), d["threshold"].tolist(), d["stage_confidence"],
                        d["mask_rate"], d["loss_neg"]))  # fmt: skip
    return method, outputs


def test_bias_correction_off_reproduces_revision_1() -> None:
    method, outputs = _pinned_steps(bias_correction=False)
    for got, want in zip(outputs, REVISION_1, strict=True):
        # masks exact; thresholds and g to float32 rounding (the last step's first threshold
        # differs by 2 ulps between x86 CPUs: vectorised reductions sum in another order); the
        # losses to float32 rounding too, since L_neg is now computed in log space
        assert got[3] == want[3]
        assert got[1] == pytest.approx(want[1], rel=1e-6)
        assert got[2] == pytest.approx(want[2], rel=1e-6)
        assert got[0] == pytest.approx(want[0], rel=1e-6)
        assert got[4] == pytest.approx(want[4], rel=1e-6)
    assert method.state.s.tolist() == pytest.approx(REVISION_1_S, rel=1e-6)
    _, revision_2 = _pinned_steps(bias_correction=True)
    assert [r[1] for r in revision_2] != [r[1] for r in REVISION_1]


def test_thresholds_leave_tau_min_once_the_teacher_is_confident() -> None:
    """Revision 1's failure on a short schedule: at m = 0.999 its g carries weight 0.999^t on
    the start 1/C, so a confident teacher (p̂ = 0.9) still gives g ≈ 0.37 after 50 batches and
    every threshold stays at tau_min; the bias-corrected ĝ is 0.9 from the first batch."""
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.9, 0.05, 0.05]])
    thresholds = {}
    for bias_correction in (False, True):
        method = DTASNL(full_config("dta_snl", bias_correction=bias_correction), setup())
        for _ in range(50):
            method.training_loss(ctx_for(probs.tolist(), STRONG[:3]))
        thresholds[bias_correction] = method.thresholds()
    assert thresholds[False].tolist() == [0.5, 0.5, 0.5]  # stuck at tau_min
    g, s = DTASNL(full_config("dta_snl"), setup()).estimates()  # before any batch: uniform
    assert float(g) == pytest.approx(1 / 3) and s.tolist() == pytest.approx([1 / 3] * 3)
    # ĝ = 0.9 and ŝ = (0.617, 0.333, 0.05) exactly: class 0 (β = 1) gets ĝ itself, classes
    # 1 and 2 (β = 0.54 and 0.08, M(β) = 0.37 and 0.04) are lifted to tau_min
    s_hat = [(0.9 + 0.05 + 0.9) / 3, (0.05 + 0.9 + 0.05) / 3, 0.05]
    expected = [max(0.5, 0.9 * (v / s_hat[0]) / (2 - v / s_hat[0])) for v in s_hat]
    assert thresholds[True].tolist() == pytest.approx(expected, abs=1e-5)
    assert expected[0] == pytest.approx(0.9)


@pytest.mark.parametrize("d", [0.0, 2.0, 5.0])
def test_log_space_negative_term_equals_the_naive_one_where_that_is_accurate(d: float) -> None:
    logits = torch.tensor([[d, 0.0, -1.0], [0.5, 0.25, 0.0]], requires_grad=True)
    naive = torch.log(1 - logits.softmax(dim=-1))
    exact = log_one_minus_softmax(logits)
    torch.testing.assert_close(exact, naive, rtol=1e-5, atol=1e-6)
    (g_naive,) = torch.autograd.grad(naive.sum(), logits)
    (g_exact,) = torch.autograd.grad(exact.sum(), logits)
    torch.testing.assert_close(g_exact, g_naive, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("d", [9.5, 12.0, 17.0, 30.0])
def test_log_space_negative_term_keeps_value_and_gradient_when_q_is_near_1(d: float) -> None:
    """q_0 > 0.9998 from d = 9.5 on; from d = 17 float32 rounds 1 − q to 0: revision 1's clamped
    form is then constant (zero gradient). In log space, value and gradient stay exact."""
    logits = torch.tensor([[d, 0.0, 0.0]], dtype=torch.float32, requires_grad=True)
    pairs = torch.tensor([[True, False, False]])
    loss = negative_loss(logits, pairs)
    exact = -(math.log(2.0) - (d + math.log1p(2.0 * math.exp(-d))))  # −log(1 − q_0)
    assert loss.item() == pytest.approx(exact, rel=1e-6)
    (grad,) = torch.autograd.grad(loss, logits)
    q = torch.tensor([[d, 0.0, 0.0]], dtype=torch.float64).softmax(dim=-1)[0]
    # d/dz of −[logsumexp(z_1, z_2) − logsumexp(z)]: (q_0, q_j − 1/2 for j = 1, 2)
    expected = [float(q[0]), float(q[1]) - 0.5, float(q[2]) - 0.5]
    assert grad[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert logits.softmax(dim=-1)[0, 0] > 0.9998
    naive = -torch.log((1 - logits.softmax(dim=-1)[0, 0]).clamp_min(1e-7))  # revision 1
    (naive_grad,) = torch.autograd.grad(naive, logits)
    if d >= 17:
        assert naive_grad.abs().sum() == 0, "revision 1 loses the gradient here"
