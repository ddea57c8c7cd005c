"""FlexMatch's lambda_u ramp (method.lambda_u_ramp): off by default without moving any run id,
linear over the given fraction of the run when on."""

from __future__ import annotations

import pytest

from harness.plan import build_plan
from harness.spec import config_hash
from harness.ssl import ramp_weight


def test_ramp_is_linear_then_flat():
    assert ramp_weight(0, 800, 0.1) == pytest.approx(1 / 80)
    assert ramp_weight(39, 800, 0.1) == pytest.approx(0.5)
    assert ramp_weight(79, 800, 0.1) == 1.0
    assert ramp_weight(500, 800, 0.1) == 1.0
    assert ramp_weight(0, 800, 0.0) == 1.0  # off


def test_the_default_ramp_enters_no_hash():
    config = build_plan("flexmatch", "10%", "0", "synthfer", ["+experiment=synth_faces"])[0].config
    assert config["method"]["lambda_u_ramp"] == 0.0  # visible in the run's config ...
    without = {
        **config,
        "method": {k: v for k, v in config["method"].items() if k != "lambda_u_ramp"},
    }
    assert config_hash(config) == config_hash(without)  # ... but not in its id
    assert config_hash(config).startswith("87b581e5")  # the committed run's id
    ramped = build_plan("flexmatch[lambda_u_ramp=0.1]", "10%", "0", "synthfer", [])[0]
    assert ramped.config["method"]["lambda_u_ramp"] == 0.1
