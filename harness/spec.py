"""RunSpec: one run of the grid as plain, picklable data with a stable id."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

# Keys that change how a run executes but not what it computes: excluded from the config hash,
# so moving a run to another machine (threads, workers, cache folder) keeps its identity.
NON_SEMANTIC_KEYS = (
    ("data", "num_workers"),
    ("data", "cache_dir"),
    ("data", "eval_batch_size"),
    ("train", "log_every"),
    ("train", "checkpoint_every"),
    ("train", "progress_every_s"),
    ("train", "threads"),
    ("train", "tensorboard"),
    ("train", "save_weights"),
    ("backbone", "trust_weights_file"),  # whether a weights file may be fully unpickled
    ("launcher",),
)


# Keys added after results were committed, at the value that reproduces the old behaviour: left
# out of the hash at that value, so a default-valued new key changes no run id.
NEUTRAL_DEFAULTS: tuple[tuple[tuple[str, ...], Any], ...] = ((("method", "lambda_u_ramp"), 0.0),)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (hex) of the resolved config, minus the keys that do not change the result.

    A dataset identified by its content (``dataset.content``, see
    :mod:`harness.data.fingerprint`) is hashed without its path (``dataset.root``): the same
    data in another folder is the same run. Configs without it (synthfer generated into the
    cache, results written before content fingerprints) hash as they always did.
    """
    # Keyed by the config's JSON: the leaderboard hashes 10,000 configs a few times over, of
    # which a handful differ; the hash itself is computed from that same JSON.
    return _hash_of_json(json.dumps(config))


@functools.lru_cache(maxsize=4096)
def _hash_of_json(raw: str) -> str:
    text = json.dumps(semantic_config(json.loads(raw)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` as :func:`config_hash` hashes it: without the keys that do not
    change the result, the dataset's path where its content identifies it, and the keys added
    later at their neutral value (:data:`NEUTRAL_DEFAULTS`)."""
    pruned = json.loads(json.dumps(config))  # deep copy of plain data
    if isinstance(pruned.get("dataset"), dict) and pruned["dataset"].get("content"):
        pruned["dataset"].pop("root", None)
    for path in NON_SEMANTIC_KEYS:
        node = pruned
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    for path, neutral in NEUTRAL_DEFAULTS:
        node = pruned
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] == neutral:
            node.pop(path[-1])
    return pruned


def slug(text: str) -> str:
    """A filename-safe form of a label or method variant: ``10%`` → ``10pct``."""
    text = text.replace("%", "pct").replace("/class", "perclass").replace("/", "-")
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text).strip("_")


def row_label(method_label: str, sweep: object) -> str:
    """A leaderboard row's name: ``fixmatch``, or ``fixmatch (optim.lr=0.01, ema.decay=0.99)``
    for one configuration of a sweep (``sweep``: what it changes; anything but a non-empty
    list of them, e.g. a result written before sweeps existed, names no configuration)."""
    if isinstance(sweep, list | tuple) and sweep:
        return f"{method_label} ({', '.join(map(str, sweep))})"
    return method_label


@dataclass(frozen=True)
class RunSpec:
    """One (dataset, method variant, label setting, seed) run with its resolved config.

    ``method`` is the registry name; ``method_label`` is the variant as the user asked for it
    (``dta_snl[snl=false]``); with ``sweep`` (``("optim.lr=0.01",)``, what this point of a sweep
    changes) it names the leaderboard row: see :func:`row_label`. Neither enters the run's
    identity, which is its resolved config.
    """

    dataset: str
    method: str
    method_label: str
    labels: str
    seed: int
    config: dict[str, Any]
    config_hash: str
    sweep: tuple[str, ...] = ()  # the swept overrides of this run's configuration

    @property
    def run_id(self) -> str:
        """Stable, readable and unique: ``supervised__10pct__seed0__1a2b3c4d``."""
        parts = (slug(self.method_label), slug(self.labels), f"seed{self.seed}")
        return "__".join([*parts, self.config_hash[:8]])
