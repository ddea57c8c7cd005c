"""protocol=shared|paper (harness/plan.py): the default changes no run id, paper composes each
method with its authors' recipe (its config's paper: block), the command line and variants still
win, and a variant may set the recipe keys."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.plan import build_plan, paper_settings
from harness.report.protocol import protocol_lines


def _config(method: str, *overrides: str) -> dict:
    return build_plan(method, "10%", "0", "synthfer", ["train.steps=10", *overrides])[0].config


def test_the_default_protocol_enters_no_config_and_no_id():
    shared = build_plan("flexmatch", "10%", "0", "synthfer", ["protocol=shared"])[0]
    plain = build_plan("flexmatch", "10%", "0", "synthfer", [])[0]
    assert shared.run_id == plain.run_id
    assert "protocol" not in plain.config and "paper" not in plain.config


def test_committed_run_ids_do_not_move():
    # ids of results committed before the key existed (results/synthfer/)
    for method, run_id in [
        ("supervised", "supervised__10pct__seed0__01192464"),
        ("flexmatch", "flexmatch__10pct__seed0__87b581e5"),
        ("adacm", "adacm__10pct__seed0__82091e09"),
    ]:
        spec = build_plan(method, "10%", "0", "synthfer", ["+experiment=synth_faces"])[0]
        assert spec.run_id == run_id


def test_paper_trains_adacm_with_its_authors_optimiser():
    config = _config("adacm", "protocol=paper")
    assert config["protocol"] == "paper"
    assert config["optim"]["name"] == "adamw" and config["optim"]["lr"] == pytest.approx(5e-4)
    assert config["optim"]["weight_decay"] == pytest.approx(0.02)
    assert config["sched"]["num_cycles"] == 0.0  # constant lr
    assert (config["data"]["batch_size"], config["data"]["unlabelled_ratio"]) == (16, 1)
    assert config["ema"]["decay"] == 0.999
    assert config["train"]["steps"] == 10  # the length stays the experiment's budget


def test_paper_overrides_the_experiment_but_not_the_command_line():
    config = _config("flexmatch", "+experiment=synth_faces", "protocol=paper", "optim.lr=0.01")
    assert config["data"]["unlabelled_ratio"] == 7  # USB's uratio over the experiment's 1
    assert config["ema"]["decay"] == 0.999
    assert config["optim"]["lr"] == 0.01  # the user's override wins


def test_a_method_without_paper_settings_keeps_the_shared_recipe_under_its_own_protocol():
    paper = build_plan("dta_snl", "10%", "0", "synthfer", ["protocol=paper"])[0]
    shared = build_plan("dta_snl", "10%", "0", "synthfer", [])[0]
    assert paper_settings("dta_snl") == {}
    assert paper.config["optim"] == shared.config["optim"]
    assert paper.run_id != shared.run_id  # never the same cell as a shared run


def test_a_variant_sets_recipe_keys():
    spec = build_plan("adacm[optim.name=adam,optim.lr=5e-4]", "10%", "0", "synthfer", [])[0]
    assert spec.config["optim"]["name"] == "adam"
    assert spec.config["optim"]["lr"] == pytest.approx(5e-4)
    assert spec.method_label == "adacm[optim.name=adam,optim.lr=5e-4]"


@pytest.mark.parametrize(
    ("methods", "overrides", "message"),
    [
        ("adacm[optim.lrr=1]", [], "no config defines 'optim.lrr'; did you mean optim.lr?"),
        ("adacm", ["protocol=papers"], "protocol=papers: choose shared or paper"),
    ],
)
def test_bad_protocol_input_is_one_clear_line(methods: str, overrides: list, message: str):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        build_plan(methods, "10%", "0", "synthfer", overrides)


def test_every_declared_paper_setting_names_its_source():
    from harness.config import config_dir

    for name in ("fixmatch", "flexmatch", "freematch", "adacm"):
        assert paper_settings(name), name
        text = (config_dir() / "method" / f"{name}.yaml").read_text()
        block = text[text.index("\npaper:") :]
        leaves = [
            line for line in block.splitlines()[1:] if ":" in line and line.split(":")[1].strip()
        ]
        assert leaves and all("#" in line for line in leaves), name


def test_the_protocol_block_lists_each_methods_recipe():
    results = []
    for method in ("adacm", "flexmatch"):
        config = _config(method, "protocol=paper")
        results.append(
            {
                "method": method,
                "method_label": method,
                "labels": "10%",
                "seed": 0,
                "dataset": "synthfer",
                "config": config,
            }
        )
    text = "\n".join(protocol_lines(results, {}))
    assert "- **protocol**: paper" in text
    assert "`adacm`: adamw: lr=0.0005" in text and "batch 16, μ = 1" in text
    assert "`flexmatch`: sgd: lr=0.03" in text and "batch 64, μ = 7" in text
    # Ada-CM's lr is constant (a cosine of 0 cycles), and the block says so.
    assert "weight_decay=0.02, betas=[0.9, 0.999]; constant lr, warm-up 0" in text
    assert "cosine (num_cycles 0.4375)" in text
