"""Turn a grid request (methods × sweep configurations × label settings × seeds) into RunSpecs.

A method may be a variant: ``dta_snl[snl=false,lambda_neg=0.5]`` runs ``dta_snl`` with
``method.snl=false method.lambda_neg=0.5`` and is its own leaderboard row under that name; a
variant may also set the training-recipe keys a protocol sets (:data:`RECIPE_KEYS`), as given:
``adacm[optim.name=adam,optim.lr=5e-4]``.

``protocol=paper`` composes each method with the settings its authors used, its config's
``paper:`` block, applied before the command line's overrides (which still win);
``protocol=shared`` (the default) is one recipe for every method. The default and the ``paper:``
blocks never enter a run's config, so no run id made before the key existed changes.
An override holding a comma list (``optim.lr=0.01,0.03``) is swept like Hydra's multirun; each
configuration is its own row, labelled by what it changes: ``fixmatch (optim.lr=0.01)``.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import (
    check_override_keys,
    compose_config,
    compose_template,
    config_keys,
    group_options,
    is_group_override,
    parse_overrides,
    resolve_config,
)
from harness.data.datasets import config_classes
from harness.data.fingerprint import ContentPins
from harness.data.synthfer import SynthConfig, pin_generator
from harness.errors import ConfigError
from harness.files import check_free_text, check_plain_name
from harness.labels import LabelProtocol, check_split_classes, parse_protocols
from harness.pretrain import pin_pretrain
from harness.registry import get_method, method_settings, plugin_identity
from harness.spec import RunSpec, config_hash

# Set by the grid's flags, per run: an override of them would contradict the run's name.
_GRID_FLAGS = {
    "method": "--methods",
    "dataset": "--dataset",
    "labels": "--labels",
    "seed": "--seeds",
}
# The training recipe: what protocol=paper may set, and a variant may set besides method.*.
RECIPE_KEYS = ("optim.", "sched.", "ema.decay", "data.batch_size", "data.unlabelled_ratio")
PROTOCOLS = ("shared", "paper")
DEFAULT_PROTOCOL = "shared"
_VARIANT = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:\[(?P<args>[^\[\]]*)\])?$")


@dataclass(frozen=True)
class MethodVariant:
    """A registered method plus ``method.*`` overrides; ``label`` names its leaderboard row."""

    name: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name}[{','.join(self.overrides)}]" if self.overrides else self.name


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``[...]``: ``a,b[x=1,y=2]`` → ``[a, b[x=1,y=2]]``."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_methods(text: str) -> list[MethodVariant]:
    """Parse ``--methods``; every name must be registered (the error lists those that are)."""
    variants = []
    for item in split_top_level(text):
        match = _VARIANT.match(item)
        if not match:
            raise ConfigError(
                f"cannot read method {item!r}: expected a name or name[key=value,...], "
                "e.g. dta_snl[snl=false]"
            )
        get_method(match["name"])
        overrides = tuple(a.strip() for a in (match["args"] or "").split(",") if a.strip())
        for override in overrides:
            if "=" not in override:
                raise ConfigError(f"method variant {item!r}: {override!r} is not key=value")
        variants.append(MethodVariant(match["name"], overrides))
    if not variants:
        raise ConfigError("--methods is empty: name at least one method (see `bench methods`)")
    return list({v.label: v for v in variants}.values())  # each once, where first named


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or a range ``0-4`` (both ends included), or both: ``0-2,7``; a seed given
    twice is planned once, in the order first given."""
    seeds: list[int] = []
    for part in split_top_level(text):
        bounds = part.split("-")
        if not all(b.isdigit() for b in bounds) or len(bounds) > 2:
            raise ConfigError(f"cannot read seed {part!r}: expected e.g. 0,1,2 or 0-4")
        first, last = int(bounds[0]), int(bounds[-1])
        if first > last:
            raise ConfigError(
                f"seed range {part!r} is empty: write it low-high, e.g. {last}-{first}"
            )
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise ConfigError("--seeds is empty")
    return list(dict.fromkeys(seeds))


@dataclass(frozen=True)
class Configuration:
    """One point of a sweep: the overrides to apply, and the swept ones that name it."""

    overrides: tuple[str, ...]
    changes: tuple[str, ...] = ()  # e.g. ("optim.lr=0.01",): labels its leaderboard row


def expand_sweeps(overrides: Sequence[str]) -> list[Configuration]:
    """Hydra multirun's grid: every override holding a comma list (``optim.lr=0.01,0.03``,
    or ``range(...)``/``choice(...)``) becomes one axis; the product of the axes, in the order
    given, is the list of configurations. Quoted commas and lists (``[a,b]``) are values, as
    Hydra reads them."""
    axes: list[list[tuple[str, str | None]]] = []
    for text, override in zip(overrides, parse_overrides(overrides), strict=True):
        if override.is_sweep_override():
            key, name = override.get_key_element(), override.key_or_group
            values = list(override.sweep_string_iterator())
            axes.append([(f"{key}={v}", f"{name}={v}") for v in values])
        else:
            axes.append([(text, None)])
    return [
        Configuration(
            tuple(text for text, _ in point), tuple(change for _, change in point if change)
        )
        for point in itertools.product(*axes)
    ]


def build_plan(
    methods: str,
    labels: str,
    seeds: str,
    dataset: str,
    overrides: Sequence[str] = (),
) -> list[RunSpec]:
    """One RunSpec per (method variant, sweep configuration, label setting, seed), in that
    nesting order. Every override key is checked against the configs first."""
    if dataset not in group_options("dataset"):
        raise ConfigError(
            f"unknown dataset {dataset!r}; available: {', '.join(group_options('dataset'))}"
        )
    variants = parse_methods(methods)
    for variant in variants:
        _check_variant_keys(variant)
    configurations = expand_sweeps(overrides)
    protocols = list({p.text: p for p in parse_protocols(labels)}.values())  # each once
    seed_list = parse_seeds(seeds)
    specs: dict[str, RunSpec] = {}  # by run id: a run named twice (10%,10%) is planned once
    contents = ContentPins()  # the dataset's identity by content, not by path
    for variant in variants:
        for configuration in configurations:
            _check_override_keys(variant, dataset, configuration.overrides)
            template = _run_template(variant, dataset, configuration.overrides)
            plugin = plugin_identity(variant.name)  # a plugin's code is part of its runs' ids
            for protocol in protocols:
                for seed in seed_list:
                    config = _drop_protocol_keys(
                        resolve_config(template, {"labels": protocol.text, "seed": seed})
                    )
                    config = pin_pretrain(contents.pin(pin_generator(config)))
                    if plugin is not None:
                        config["plugin"] = dict(plugin)
                    _check_path_names(variant, config)
                    _check_split_classes(protocol, config)
                    spec = RunSpec(
                        dataset=config["dataset"]["name"],
                        method=variant.name,
                        method_label=variant.label,
                        labels=protocol.text,
                        seed=seed,
                        config=config,
                        config_hash=config_hash(config),
                        sweep=configuration.changes,
                    )
                    specs.setdefault(spec.run_id, spec)
    planned = list(specs.values())
    _check_distinct_configs(planned)
    return planned


def _check_distinct_configs(specs: list[RunSpec]) -> None:
    """Refuse two rows that would train the same config: a variant whose settings are its
    method's defaults (``fixmatch,fixmatch[p_cutoff=0.95]``) would train the run twice, under
    two names, and an ablation table would compare it with itself."""
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        first = seen.setdefault(spec.config_hash, spec)
        if first.method_label != spec.method_label:
            raise ConfigError(
                f"--methods: {spec.method_label!r} and {first.method_label!r} are the same run "
                f"(identical config {spec.config_hash[:8]} at {spec.labels}, seed {spec.seed}): "
                "its settings are the method's defaults; name one of them"
            )


def _check_split_classes(protocol: LabelProtocol, config: dict[str, Any]) -> None:
    """A ``perclass:`` or published split that does not fit the dataset's classes is refused
    here, where the config tells them, rather than failing in every run."""
    classes = config_classes(config["dataset"])
    if classes is not None:
        check_split_classes(protocol, len(classes), classes)


def _check_path_names(variant: MethodVariant, config: dict[str, Any]) -> None:
    """Refuse, at planning, any name that would become a path component unsafely: the dataset
    name (``results/<dataset>/``), the method or plugin name (its run ids and cache files), the
    tag, the pretraining's name (a cache file); labels and settings are slugged into run ids."""
    check_plain_name(variant.name, "method")
    check_plain_name(config["dataset"]["name"], "dataset.name")
    check_free_text(config["tag"], "tag")
    if isinstance(config.get("pretrain"), dict) and "name" in config["pretrain"]:
        check_plain_name(config["pretrain"]["name"], "pretrain.name")


def _check_override_keys(variant: MethodVariant, dataset: str, overrides: Sequence[str]) -> None:
    """Refuse overrides whose key the configs this run composes do not define, and those that
    would change what the grid's flags set (the run would then not be the cell it is named)."""
    parsed = parse_overrides(overrides)
    for override in parsed:
        if flag := _GRID_FLAGS.get(override.key_or_group):
            raise ConfigError(f"override {override.input_line!r}: the grid sets it; use {flag}")
    has_file = variant.name in group_options("method")
    selections = [
        f"method={variant.name if has_file else 'supervised'}",
        f"dataset={dataset}",
        *(o.input_line for o in parsed if is_group_override(o)),
    ]
    known = config_keys(selections)
    if not has_file:  # a plugin without a config file: its class's defaults are its keys
        known = {k for k in known if not k.startswith("method.")}
        known |= {f"method.{key}" for key in method_settings(variant.name)}
    if "dataset.generate" in known:  # synthfer's settings are SynthConfig's fields
        known |= {f"dataset.generate.{field}" for field in SynthConfig.__dataclass_fields__}
    check_override_keys([o for o in parsed if not is_group_override(o)], known)


def _run_template(variant: MethodVariant, dataset: str, overrides: Sequence[str]) -> DictConfig:
    """The composed (unresolved) config shared by a variant's runs of one configuration;
    method overrides from the variant win over the CLI's."""
    base = [f"dataset={dataset}", *overrides]
    variant_overrides = [o if is_recipe_key(o) else f"method.{o}" for o in variant.overrides]
    if variant.name in group_options("method"):
        head = [f"method={variant.name}"]
        template = compose_template([*head, *base, *variant_overrides])
        paper = _paper_overrides(template)
        if paper:  # compose again with the paper's recipe under the command line's overrides
            template = compose_template([*head, *paper, *base, *variant_overrides])
        return template
    # A plugin without a config file (e.g. from another package): its class carries defaults.
    plain = [o for o in base if not o.lstrip("+").startswith("method.")]
    template = compose_template(["method=supervised", *plain])
    node = OmegaConf.create(method_settings(variant.name))
    extra = [o.lstrip("+").removeprefix("method.") for o in base if o not in plain]
    for item in [*extra, *variant.overrides]:
        key, value = item.split("=", 1)
        OmegaConf.update(template if is_recipe_key(item) else node, key, _yaml(value))
    template.method = node
    _protocol(template)  # a plugin declares no paper settings: paper runs on the shared recipe
    return template


def is_recipe_key(override: str) -> bool:
    """Whether a variant's ``key=value`` sets the training recipe (:data:`RECIPE_KEYS`)
    rather than one of its method's settings."""
    key = override.split("=", 1)[0].strip().lstrip("+")
    return any(key.startswith(k) if k.endswith(".") else key == k for k in RECIPE_KEYS)


def _protocol(template: DictConfig) -> str:
    """The composed config's ``protocol``, checked."""
    value = OmegaConf.select(template, "protocol", default=DEFAULT_PROTOCOL)
    if value not in PROTOCOLS:
        raise ConfigError(f"protocol={value}: choose {' or '.join(PROTOCOLS)}")
    return value


def _paper_overrides(template: DictConfig) -> list[str]:
    """``key=value`` overrides of the method's ``paper:`` block when ``protocol=paper`` (empty
    under the shared protocol, or for a method that declares no paper settings)."""
    if _protocol(template) != "paper":
        return []
    paper = OmegaConf.select(template, "paper", default=None)
    if paper is None:
        return []
    flat = OmegaConf.to_container(paper, resolve=True)
    overrides = []
    for key, value in _leaves(flat):
        if not is_recipe_key(key):
            raise ConfigError(
                f"paper.{key}: a paper block sets only the training recipe "
                f"({', '.join(RECIPE_KEYS)})"
            )
        overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def paper_settings(name: str) -> dict[str, Any]:
    """A method's declared paper recipe as dotted keys (``{"optim.lr": 5e-4, ...}``); empty
    when its config declares none (the protocol block lists these)."""
    if name not in group_options("method"):
        return {}
    paper = compose_config([f"method={name}"]).get("paper") or {}
    return dict(_leaves(paper))


def _leaves(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted (key, value) pairs of a nested dict's leaves (lists are leaves)."""
    pairs: list[tuple[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, dict):
            pairs.extend(_leaves(value, f"{prefix}{key}."))
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _drop_protocol_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The run's config without the ``paper:`` blocks (declarations, not settings: what a paper
    run uses is in optim/sched/data/ema already), without a protocol's ``for_datasets`` (a
    check) and without ``protocol`` when it is the default, so that runs made before the key
    existed keep their ids."""
    config.pop("paper", None)
    config.pop("for_datasets", None)  # checked when composed; the dataset is in the config
    if config.get("protocol") == DEFAULT_PROTOCOL:
        config.pop("protocol")
    return config


def _check_variant_keys(variant: MethodVariant) -> None:
    """A variant may only change settings its method has: a misspelt key would otherwise make
    a leaderboard row that claims an ablation it never ran."""
    settings = method_settings(variant.name) if variant.overrides else {}
    known = ", ".join(k for k in settings if k != "name") or "(none)"
    for override in variant.overrides:
        key = override.split("=", 1)[0].strip()
        if is_recipe_key(override):
            _check_recipe_key(variant, key)
            continue
        node: object = settings
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                close = difflib.get_close_matches(key.lstrip("+"), list(settings), n=2)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ConfigError(
                    f"method variant {variant.label!r}: {variant.name} has no setting {key!r}; "
                    f"its settings: {known}{hint}"
                )
            node = node[part]


def _check_recipe_key(variant: MethodVariant, key: str) -> None:
    """A variant's recipe key must be one the root config defines (``optim.lr``, not
    ``optim.lrr``)."""
    known = config_keys(["method=supervised"])
    if key.lstrip("+") not in known:
        close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=0.8)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"method variant {variant.label!r}: no config defines {key!r}{hint}")


def _yaml(value: str) -> object:
    """Read an override value the way Hydra would (``false`` → False, ``0.5`` → 0.5)."""
    return OmegaConf.create(f"v: {value}")["v"]
