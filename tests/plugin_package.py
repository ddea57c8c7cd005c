"""A method plugin from another package, laid out as ``pip install`` leaves one: a module plus
its ``.dist-info`` with ``entry_points.txt``. Shared by tests/test_plugins.py (which runs it
through ``bench`` in subprocesses) and tests/test_method_contract.py (which holds it to the
method contract in this process) — through the ``plugin_site`` fixture of conftest.py.

A plain module (tests/ is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
from pathlib import Path

from harness.registry import discover

# Entropy minimisation (Grandvalet & Bengio, 2005): the labelled loss plus the mean entropy of
# the student's predictions on unlabelled weak views. Small, and unlike any built-in method.
PLUGIN = '''
"""Entropy minimisation as a fer-bench method plugin."""

from harness.method import Method, StepContext, StepOutput
from harness.registry import register_method
from harness.ssl import forward_logits, require_unlabelled, supervised_loss


@register_method("entmin", "Entropy minimisation on unlabelled weak views (external plugin)")
class EntropyMinimisation(Method):
    uses_unlabelled = True
    default_config = {"lambda_u": 0.3}

    def __init__(self, config, setup):
        super().__init__(config, setup)
        self.lambda_u = float(self.setting("lambda_u"))
        self.steps_seen = 0

    def training_loss(self, ctx: StepContext) -> StepOutput:
        weak = require_unlabelled(ctx, "entmin").weak
        logits_x, logits_w = forward_logits(ctx.student, ctx.labelled.images, weak)
        loss_sup = supervised_loss(logits_x, ctx.labelled.targets)
        log_p = logits_w.float().log_softmax(dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()
        self.steps_seen += 1
        return StepOutput(
            loss_sup + self.lambda_u * entropy,
            {"loss_sup": float(loss_sup.detach()), "entropy": float(entropy.detach())},
        )

    def state_dict(self):
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        self.steps_seen = int(state["steps_seen"])

    def summary(self):
        return {"steps_seen": self.steps_seen}
'''
PLUGIN_METHOD = "entmin"
PLUGIN_MODULE = "entmin_plugin"


def install_plugin(site: Path) -> Path:
    """Lay out the distribution ``fer-bench-entmin`` as pip would, under ``site``; returns it."""
    (site / PLUGIN_MODULE).mkdir(parents=True)
    (site / PLUGIN_MODULE / "__init__.py").write_text(PLUGIN)
    dist = site / "fer_bench_entmin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fer-bench-entmin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[bench.methods]\n{PLUGIN_METHOD} = {PLUGIN_MODULE}\n")
    return site


@functools.cache
def plugin_site() -> Path:
    """One installed copy of the plugin for the whole test session (removed at exit)."""
    site = Path(tempfile.mkdtemp(prefix="fer-bench-plugin-")) / "site-packages"
    atexit.register(shutil.rmtree, site.parent, ignore_errors=True)
    return install_plugin(site)


def register_plugin_in_this_process() -> Path:
    """Put the plugin's site on ``sys.path`` and let the registry find its entry point, as
    it would in a process started with the package installed."""
    site = plugin_site()
    if str(site) not in sys.path:
        sys.path.append(str(site))
    discover(refresh=True)
    return site
