"""The results frame: one row per stored result, and the orders and names every table reads.

The leaderboard, its protocol and cost blocks, the figures, the exports and the experiment
scripts all read results through :func:`results_frame` and order rows and columns with
:func:`row_order` and :func:`label_order`, so a row or a column means the same everywhere.
This module imports nothing from the report modules above it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import LabelProtocolError
from harness.labels import parse_protocol
from harness.spec import config_hash, row_label, semantic_config

METRIC_NAMES = {
    "top1": "top-1 accuracy (%)",
    "mean_class_acc": "mean class accuracy (%)",
    "macro_f1": "macro-F1 (%)",
    # The best of a run's periodic evaluations, as Ada-CM (main.py:157-158: best_acc) and LEAF
    # report: chosen on the test set (there is no validation split), so never the headline.
    "best_top1": "best top-1 over evaluations (%, chosen on the test set)",
    "best_mean_class_acc": "best mean class accuracy over evaluations (%, chosen on the test set)",
    "best_macro_f1": "best macro-F1 over evaluations (%, chosen on the test set)",
}
BEST_PREFIX = "best_"
# What the rows of one section may differ in: the method with its settings (and a plugin's
# code), the label setting and the seed; the tag only names a section. Everything else in a
# run's config is its section's protocol (schedule, backbone, image size, optimiser, data).
ROW_KEYS = ("method", "plugin", "labels", "seed", "tag")
NAMED_KEYS = 4  # a section named by more differing keys than this says "+N more"
BALANCED_TEST_SETS = ("affectnet7", "affectnet8")
BASELINE = "supervised"
PAIRED_BASELINE = "fixmatch"  # the SSL baseline every other method is also compared with
EMPTY_CELL = "–"


def headline_metric(dataset: str) -> str:
    """The figure a dataset's literature reports first."""
    return "mean_class_acc" if dataset in BALANCED_TEST_SETS else "top1"


def experiment_key(result: dict[str, Any]) -> str:
    """Identity of the experiment a run belongs to: the hash of its config minus the seed
    (and minus the keys ``config_hash`` ignores). Empty when the result has no config, which
    then never triggers the mixed-cell footnote."""
    config = result.get("config")
    if not isinstance(config, dict):
        return ""
    return config_hash({key: value for key, value in config.items() if key != "seed"})


def results_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: dataset, tag, method, method_label, labels, seed, config_hash,
    experiment (config hash without the seed), finished, its section (:func:`section_names`)
    and the three table metrics."""
    columns = [
        "dataset",
        "tag",
        "method",
        "method_label",
        "labels",
        "seed",
        "config_hash",
        "experiment",
        "finished",
        "command",
        "split_hash",
        "commit",
        "device",
        "threads",
        "train_seconds",
        "pretrain_key",
        "pretrain_seconds",
        "pretrain_file",
        "health",
        "section",
        *METRIC_NAMES,
    ]
    # Each config as JSON once: its experiment key and its section's protocol both come from
    # that text, computed once per distinct config (a grid's 10,000 runs share a handful).
    keys = [_config_keys(_unseeded_text(result)) for result in results]
    sections = _section_names(results, [protocol for _, protocol in keys])
    rows = []
    for result, section, (experiment, _) in zip(results, sections, keys, strict=True):
        timing = result.get("timing") or {}
        provenance = result.get("provenance") or {}
        pretrain = provenance.get("pretrain") or {}
        rows.append(
            {
                "dataset": result["dataset"],
                "tag": result.get("tag") or "",
                "method": result.get("method") or result["method_label"],
                "method_label": result_row_label(result),
                "labels": result["labels"],
                "seed": result["seed"],
                "config_hash": result.get("config_hash", ""),
                "experiment": experiment,
                "finished": timing.get("finished") or "",
                "command": _command(provenance.get("command")),
                "split_hash": paired_inputs(result)[0],
                "commit": _commit(provenance),
                "device": str(provenance.get("device") or ""),
                "threads": training_threads(result),
                "train_seconds": _number(timing.get("train_seconds")),
                # harness/pretrain.py: the shared pretraining, trained once for all its runs.
                "pretrain_key": str(pretrain.get("key") or ""),
                "pretrain_seconds": _number(pretrain.get("train_seconds")),
                # The pretrained file's bytes: one key can name different bytes on two machines
                # (docs/pretraining.md), so pairing and the ‡ mark look at this, not the key.
                "pretrain_file": pretrain_file(result),
                # harness/health.py's flags, when the loader attached them (attach_health)
                "health": tuple((result.get("health") or {}).get("flags") or ()),
                "section": section,
                **_metrics(result),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    """Every :data:`METRIC_NAMES` value of the result: the final metrics, and for
    ``best_<metric>`` the best of its periodic evaluations (``best.top1`` for results whose
    evaluations do not hold that metric); NaN where it has none."""
    final = result.get("metrics") or {}
    values = {
        name: _number(final.get(name)) for name in METRIC_NAMES if not name.startswith(BEST_PREFIX)
    }
    best = {name: math.nan for name in values}
    for evaluation in result.get("evaluations") or []:  # one pass for all three
        if isinstance(evaluation, dict):
            for name in best:
                value = _number(evaluation.get(name))
                if not math.isnan(value) and not value <= best[name]:
                    best[name] = value
    if math.isnan(best["top1"]):
        best["top1"] = _number((result.get("best") or {}).get("top1"))
    return {**values, **{BEST_PREFIX + name: value for name, value in best.items()}}


def result_row_label(result: dict[str, Any]) -> str:
    """The row a result belongs to: its method variant, and for one configuration of a sweep
    what that configuration changes (``fixmatch (optim.lr=0.01)``), as stored in the result."""
    return row_label(result["method_label"], result.get("sweep"))


def _command(argv: Any) -> str:
    """The command line a run was started with (program name without its folder); empty when
    the result does not record one."""
    if not isinstance(argv, list) or not argv:
        return ""
    return shlex.join([Path(str(argv[0])).name, *map(str, argv[1:])])


def _commit(provenance: dict[str, Any]) -> str:
    """The short git commit a run was made at (``+dirty`` when the tree had changes)."""
    git = provenance.get("git") or {}
    commit = str(git.get("commit") or "")[:7]
    return f"{commit}+dirty" if commit and git.get("dirty") else commit


def pretrain_file(result: dict[str, Any]) -> str:
    """The first 8 hex digits of the SHA-256 of the pretrained backbone a run started from
    (``provenance.pretrain.sha256``), or "" for a run without a pretraining or a record of it."""
    pretrain = (result.get("provenance") or {}).get("pretrain") or {}
    return str(pretrain.get("sha256") or "")[:8]


def paired_inputs(result: dict[str, Any]) -> tuple[str, str]:
    """What two runs must share, besides the seed, to be paired: the labelled split's hash and
    the pretrained backbone file (:func:`pretrain_file`); "" where a result does not record one."""
    return (str((result.get("split") or {}).get("hash") or ""), pretrain_file(result))


def same_inputs(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Two runs' :func:`paired_inputs` agree, each where both are recorded (older results lack
    some): pairing them compares the methods, not two splits or two backbones."""
    return all(x == y or "" in (x, y) for x, y in zip(a, b, strict=True))


def training_threads(result: dict[str, Any]) -> int | None:
    """The torch CPU threads a run trained with: ``train.threads`` where its config sets it
    (the engine applies it before training), else ``provenance.torch_threads`` (which older
    results recorded before the setting applied, so the config is the better witness)."""
    configured = ((result.get("config") or {}).get("train") or {}).get("threads")
    recorded = (result.get("provenance") or {}).get("torch_threads")
    value = configured if configured is not None else recorded
    return int(value) if value is not None else None


def _number(value: Any) -> float:
    """A metric as a float; NaN where it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def label_order(text: str) -> tuple[int, float, str]:
    """Column order key of a label setting: per-class counts, then totals, then fractions,
    each by size; a setting this version cannot parse goes last rather than crash."""
    try:
        kind, value = parse_protocol(text).sort_key
    except LabelProtocolError:
        return (9, 0.0, text)
    return (kind, value, text)


def row_order(frame: pd.DataFrame) -> list[str]:
    """The rows (method labels) of a frame: the baseline's variants first, then the rest;
    alphabetical within each group."""
    baseline = set(frame.loc[frame["method"] == BASELINE, "method_label"])
    return sorted(frame["method_label"].unique(), key=lambda label: (label not in baseline, label))


def section_key(dataset: str, tag: str) -> str:
    """The name of a leaderboard section: ``dataset``, or ``dataset [tag]``."""
    return f"{dataset} [{tag}]" if tag else dataset


@functools.cache
def method_owned_keys() -> tuple[frozenset[str], frozenset[str]]:
    """Dotted keys that belong to a method although they sit outside its ``method:`` block,
    over every method config: (the keys a method's config sets for it, e.g. dta_snl's
    ``data.balanced_sampling``; the recipe keys a ``paper:`` block declares, a method's own
    under ``protocol=paper``)."""
    import yaml

    from harness.config import config_dirs

    own: set[str] = set()
    paper: set[str] = set()
    for folder in config_dirs():
        for path in sorted((folder / "method").glob("*.yaml")):
            data = yaml.safe_load(path.read_text()) or {}
            for key, value in data.items():
                if key == "paper":
                    paper |= set(_leaves(value))
                elif key not in ("method", "defaults"):
                    own |= set(_leaves({key: value}))
    return frozenset(own), frozenset(paper)


def _unseeded_text(result: dict[str, Any]) -> str | None:
    """The result's config less its seed, as canonical JSON; None without a config."""
    config = result.get("config")
    if not isinstance(config, dict):
        return None
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _config_keys(text: str | None) -> tuple[str, str]:
    """(:func:`experiment_key`, :func:`_config_text`) of a config given as
    :func:`_unseeded_text` (the same values: key order does not enter either)."""
    if text is None:
        return "", "{}"
    config = json.loads(text)
    protocol = json.dumps({k: v for k, v in config.items() if k not in ROW_KEYS}, sort_keys=True)
    return config_hash(config), protocol


def section_protocol(result: dict[str, Any]) -> dict[str, str]:
    """What every run of ``result``'s section shares: its config as the run id hashes it
    (:func:`~harness.spec.semantic_config`), less :data:`ROW_KEYS` and the keys a method owns
    (:func:`method_owned_keys`), as dotted key → JSON value. Empty without a config."""
    return dict(_protocol(_config_text(result))[0])  # a copy: the cached one is shared


def _config_text(result: dict[str, Any]) -> str:
    """The result's config less :data:`ROW_KEYS`, as canonical JSON (a cache key: a grid's
    runs share a handful of protocols)."""
    config = result.get("config")
    if not isinstance(config, dict):
        return "{}"
    return json.dumps({k: v for k, v in config.items() if k not in ROW_KEYS}, sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _protocol(config_text: str) -> tuple[dict[str, str], str]:
    """:func:`section_protocol` of a config given as :func:`_config_text`, and its digest."""
    config = json.loads(config_text)
    if not config:
        return {}, _digest({})
    own, paper = method_owned_keys()
    mine = own | paper if config.get("protocol") == "paper" else own
    leaves = _leaves(semantic_config(config)).items()
    protocol = {key: value for key, value in leaves if key not in mine}
    return protocol, _digest(protocol)


def section_names(results: list[dict[str, Any]]) -> list[str]:
    """The leaderboard section of each result: :func:`section_key` of its dataset and tag, one
    section per protocol (:func:`section_protocol`). Where runs of one dataset and tag differ
    in protocol, each section's name adds what differs: ``synthfer · train.steps=60``."""
    return _section_names(results, [_config_text(r) for r in results])


def _section_names(results: list[dict[str, Any]], texts: list[str]) -> list[str]:
    """:func:`section_names`, given each result's :func:`_config_text`."""
    protocols = [_protocol(text) for text in texts]
    bases = [section_key(r["dataset"], r.get("tag") or "") for r in results]
    groups: dict[str, dict[str, dict[str, str]]] = {}  # base → digest → protocol
    for base, (protocol, digest) in zip(bases, protocols, strict=True):
        groups.setdefault(base, {})[digest] = protocol
    named: dict[tuple[str, str], str] = {}
    for base, distinct in groups.items():
        if len(distinct) < 2:
            continue
        differing = sorted(
            k
            for k in set().union(*distinct.values())
            if len({p.get(k) for p in distinct.values()}) > 1
        )
        # A paper section lacks the recipe keys its methods own: not what names it.
        paper = method_owned_keys()[1] if any(_is_paper(p) for p in distinct.values()) else set()
        keys = [k for k in differing if k not in paper] or differing
        names = {digest: _named(base, protocol, keys) for digest, protocol in distinct.items()}
        clashes = {name for name in names.values() if list(names.values()).count(name) > 1}
        for digest, name in names.items():
            named[base, digest] = f"{name} #{digest[:6]}" if name in clashes else name
    return [
        named.get((base, digest), base) for base, (_, digest) in zip(bases, protocols, strict=True)
    ]


def _named(base: str, protocol: dict[str, str], keys: list[str]) -> str:
    """``base · key=value, ...`` for the first :data:`NAMED_KEYS` of ``keys``."""
    shown = [f"{key}={_plain(key, protocol.get(key))}" for key in keys[:NAMED_KEYS]]
    if len(keys) > NAMED_KEYS:
        shown.append(f"+{len(keys) - NAMED_KEYS} more")
    return f"{base} · {', '.join(shown)}"


def _is_paper(protocol: dict[str, str]) -> bool:
    return protocol.get("protocol") == json.dumps("paper")


def _plain(key: str, value: str | None) -> str:
    """A JSON value as a section name shows it: strings bare, a missing key ``unset`` (the
    default protocol, which configs leave out, by its name)."""
    if value is None:
        if key == "protocol":
            from harness.plan import DEFAULT_PROTOCOL

            return DEFAULT_PROTOCOL
        return "unset"
    decoded = json.loads(value)
    return decoded if isinstance(decoded, str) else value


def _digest(protocol: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()


def _leaves(node: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping's leaves as dotted key → JSON value (an empty mapping is a leaf)."""
    if isinstance(node, dict) and node:
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(node, sort_keys=True)}
