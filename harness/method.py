"""The method contract: the seam between the one training engine and each method plugin.

The engine owns the loop (loaders, model, EMA teacher, optimiser, schedule, precision,
checkpoints, evaluation, logging). A method owns only what makes it different:

* how one labelled batch and (optionally) one unlabelled batch become a loss
  (:meth:`Method.training_loss`), calling the student and teacher itself;
* the state it keeps between steps (:meth:`Method.state_dict` / :meth:`Method.load_state_dict`),
  which the engine saves with every checkpoint;
* optionally, how it wraps the model (:meth:`Method.wrap_model`), e.g. a new neck;
* optionally, work at a fixed interval with the teacher on the labelled set
  (:meth:`Method.on_interval`), e.g. Ada-CM's per-epoch thresholds.

Everything crossing the seam is plain data (the dataclasses below).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from harness.errors import ConfigError
from harness.settings import read_settings


@dataclass(frozen=True)
class MethodSetup:
    """What a method may know when it is built: sizes and the labelled targets, never test data."""

    num_classes: int
    num_unlabelled: int
    labelled_targets: torch.Tensor  # (n_labelled,) int64, class of each labelled sample
    total_steps: int


@dataclass
class LabelledBatch:
    """A labelled batch: weak views (already normalised floats on the device) and targets."""

    images: torch.Tensor
    targets: torch.Tensor


@dataclass
class UnlabelledBatch:
    """An unlabelled batch: a weak and a strong view of each image, and its dataset index.

    ``hidden_targets`` are the true labels the harness hides from training; a method may use
    them only for diagnostics (pseudo-label accuracy), never in its loss.
    """

    weak: torch.Tensor
    strong: torch.Tensor
    indices: torch.Tensor
    hidden_targets: torch.Tensor


@dataclass
class StepContext:
    """Everything a method sees in one training step."""

    student: nn.Module
    teacher: nn.Module  # EMA of the student, in eval mode; call it under torch.no_grad()
    labelled: LabelledBatch
    unlabelled: UnlabelledBatch | None
    step: int
    total_steps: int
    num_classes: int


@dataclass
class StepOutput:
    """A method's answer for one step: the loss to minimise and scalar diagnostics to log.

    ``diagnostics`` values are floats, or 1-D tensors (e.g. a threshold per class) that the
    engine logs as lists. Common keys: ``loss_sup``, ``loss_unsup``, ``mask_rate``,
    ``pseudo_label_acc``, ``threshold`` (per class).
    """

    loss: torch.Tensor
    diagnostics: dict[str, float | torch.Tensor] = field(default_factory=dict)


LabelledEvalBatches = Callable[[], Iterator[LabelledBatch]]


class Method:
    """Base class for method plugins: override :meth:`training_loss`; the rest is optional.

    Class attributes describe what the engine must provide:

    * ``uses_unlabelled``: build the unlabelled loader (weak + strong views) or not;
    * ``Settings``: the method's settings dataclass (:mod:`harness.settings`), read strictly
      from its ``method:`` block into ``self.settings`` when it is built;
    * ``default_config``: its config when it has no file in ``configs/method/``;
    * ``interval_steps`` (instance attribute, 0 = never): how often :meth:`on_interval` runs;
    * ``adaptive_thresholds``: whether its logged ``threshold`` is meant to move (True, or the
      name of the boolean setting that switches it on): a run's health reads it (harness/health).
    """

    uses_unlabelled: ClassVar[bool] = False
    adaptive_thresholds: ClassVar[bool | str] = False
    # Defaults for a method that ships no configs/method/<name>.yaml (e.g. one from another
    # package): the ``method:`` block is ``{"name": <name>, **default_config}``.
    default_config: ClassVar[dict[str, Any]] = {}
    # Every built-in method declares one (an empty dataclass when it has no settings); a
    # plugin without one reads its keys untyped with :meth:`setting`.
    Settings: ClassVar[type | None] = None
    settings: Any  # an instance of ``Settings`` (subclasses narrow the type)

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        self.config = config
        self.setup = setup
        self.interval_steps = 0
        if self.Settings is not None:
            self.settings = read_settings(
                self.Settings,
                config,
                "method",
                missing_hint=self._missing_hint(),
                ignore=("name",),
            )

    def _missing_hint(self) -> str:
        """Where a missing ``method.<key>`` is set: the method's config file or defaults."""
        name = self.config.get("name", type(self).__name__)
        return (
            f" from the config of method {name!r}: set it in configs/method/{name}.yaml or in "
            "the method's default_config"
        )

    def setting(self, key: str) -> Any:
        """``method.<key>`` from the run's config, untyped, for a plugin that declares no
        ``Settings``; a missing key is a :class:`ConfigError`.

        Defaults live in one place, the method's ``configs/method/<name>.yaml`` (or its
        ``default_config``), never again in the code: the contract test checks that every key
        there is read and that the method reads no other.
        """
        try:
            return self.config[key]
        except KeyError:
            raise ConfigError(f"method.{key} is missing{self._missing_hint()}") from None

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """Return the model to train (default: unchanged). Called once, before the EMA copy."""
        return model

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """Turn one step's batches into a loss. Must be implemented by every method."""
        raise NotImplementedError

    def on_interval(
        self, teacher: nn.Module, labelled_batches: LabelledEvalBatches, step: int
    ) -> None:
        """Periodic hook (every ``interval_steps`` steps, and at step 0) with the teacher."""

    def state_dict(self) -> dict[str, Any]:
        """State kept between steps (thresholds, counters); saved with every checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def summary(self) -> dict[str, Any]:
        """Method-specific figures to store in the final result (e.g. final thresholds)."""
        return {}
