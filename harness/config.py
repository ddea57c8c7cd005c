"""Compose one resolved config per run from the Hydra config groups in ``configs/``.

The built-in configs are found beside the code: ``harness/configs/`` in an installed wheel
(``configs/`` is shipped there as package data), ``configs/`` at the top of a checkout. Folders
added with :func:`add_config_dir` (``bench run --config-dir``) add options to the groups (a
new dataset, a new method, a cluster's launcher settings); Hydra searches them after the
built-in folder, so a name the harness already has is refused rather than silently ignored.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from harness.errors import ConfigError

_HERE = Path(__file__).resolve().parent
# Installed from a wheel first: a checkout's folder would be a stranger's `configs/` there.
BUILTIN_CONFIG_DIRS = (_HERE / "configs", _HERE.parent / "configs")

# Namespaces whose keys no config lists, by design: any sbatch option may go there.
FREE_FORM_KEYS = ("launcher.additional_parameters",)

# What a `???` value means, for the datasets that need a path from the user.
_MISSING_HINTS = {
    "dataset.root": "the dataset folder on this machine, e.g. --data-root /data/RAF-DB "
    "(RAF-DB: the folder holding EmoLabel/ and Image/; AffectNet: the folder holding "
    "training.csv, validation.csv and Manually_Annotated_Images/)",
    "backbone.weights": "this protocol starts from weights you bring: a local checkpoint such "
    "as the field's ResNet-18 trained on MS-Celeb-1M (resnet18_msceleb.pth, linked from "
    "github.com/hangyu94/Ada-CM's README; torchvision names under 'state_dict', a 1000-way fc), "
    "e.g. backbone.weights=/models/resnet18_msceleb.pth",
}

_user_dirs: list[Path] = []


# What to do when Hydra's override grammar refuses a value (a path with a space, an accent, a
# bracket, a comma, a quote, '=' or '#').
QUOTING_HINT = (
    "Hydra's override grammar refuses spaces, accents, brackets, commas, quotes, '=' and '#' in "
    "a bare value: quote the value inside the override, e.g. 'dataset.root=\"/data/RAF DB\"' "
    "(the outer quotes are for the shell), or give the dataset folder as --data-root PATH, "
    "which takes any path as it is"
)


def quote_value(text: str) -> str:
    """``text`` as a quoted Hydra override value that composes back to exactly ``text``,
    whatever it holds (spaces, ``'``, ``\\``, ``[``, ``,``, ``=``, ``#``, ``${``, non-ASCII).

    Hydra's grammar: inside ``'...'`` a quote is escaped as ``\\'`` and backslashes only
    where they precede a quote or end the string; ``\\${`` keeps ``${`` from interpolating.
    """
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def config_dir() -> Path:
    """The folder holding the built-in ``config.yaml`` and config groups."""
    for folder in BUILTIN_CONFIG_DIRS:
        if (folder / "config.yaml").is_file():
            return folder
    raise ConfigError(
        f"config folder not found (looked in {', '.join(map(str, BUILTIN_CONFIG_DIRS))}): "
        "reinstall fer-bench (pip install .), whose wheel ships them as harness/configs"
    )


def add_config_dir(path: Path | str) -> None:
    """Search ``path`` for config group options too (``--config-dir``): ``dataset/*.yaml``,
    ``method/*.yaml``, ... laid out as the built-in ones, with names of their own."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--config-dir {path}: no such folder")
    for option in sorted(folder.glob("*/*.yaml")):
        twin = config_dir() / option.parent.name / option.name
        if twin.is_file():
            raise ConfigError(
                f"--config-dir: {option} has the name of a built-in config ({twin}); "
                "give it a name of its own (e.g. --dataset mydata, method=mymethod)"
            )
    if folder not in _user_dirs:
        _user_dirs.append(folder)
        _base_config.cache_clear()


def config_dirs() -> list[Path]:
    """Every config folder, in search order: the built-in one, then the user's."""
    return [config_dir(), *_user_dirs]


def group_options(group: str) -> list[str]:
    """The options of a config group over every config folder: ``group_options("dataset")``."""
    return sorted({p.stem for folder in config_dirs() for p in (folder / group).glob("*.yaml")})


def _compose(overrides: Sequence[str]) -> DictConfig:
    """Hydra's composition over :func:`config_dirs`, unresolved; errors become ConfigError."""
    first, *rest = config_dirs()
    search = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in rest)}]"] if rest else []
    try:
        with initialize_config_dir(config_dir=str(first), version_base="1.3"):
            return compose(config_name="config", overrides=[*search, *overrides])
    except HydraException as err:
        raise ConfigError(f"bad config override: {err}{_quoting_hint(err)}") from None


def _quoting_hint(err: Exception) -> str:
    """:data:`QUOTING_HINT` on a line of its own when Hydra's grammar refused a value."""
    return f"\n{QUOTING_HINT}" if "grammar" in str(err) or "LexerNoViableAlt" in str(err) else ""


def compose_config(overrides: Sequence[str]) -> dict[str, Any]:
    """Compose ``config.yaml`` with Hydra overrides and return it resolved, as plain data.

    Raises :class:`ConfigError` with the offending override or the missing key named.
    """
    return resolve_config(compose_template(overrides))


def compose_template(overrides: Sequence[str]) -> DictConfig:
    """The composed config, unresolved: one composition serves every seed and label setting of
    a configuration (:func:`resolve_config`), as Hydra takes ~60 ms per composition."""
    return _compose(overrides)


def resolve_config(template: DictConfig, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """``template`` with top-level ``values`` set (as ``key=value`` overrides would set them),
    resolved to plain data; a ``???`` value left is a ConfigError naming what to set."""
    cfg = template.copy()
    for key, value in (values or {}).items():
        cfg[key] = value
    for key in [*_missing_keys(cfg), *_unset_requirements(cfg)]:
        hint = _MISSING_HINTS.get(key, f"set it on the command line: {key}=...")
        raise ConfigError(f"config value {key} is required: {hint}")
    _check_protocol_dataset(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(f"config does not resolve: {err}") from None


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    """Hydra's reading of command-line overrides (quotes, lists and sweeps as Hydra reads them)."""
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        first_line = f"cannot read override: {err}".splitlines()[0]
        raise ConfigError(first_line + _quoting_hint(err)) from None


def is_group_override(override: Override) -> bool:
    """``dataset=rafdb`` selects a config file; ``dataset.root=...`` sets a value."""
    key = override.key_or_group
    return "." not in key and any((folder / key).is_dir() for folder in config_dirs())


@functools.lru_cache(maxsize=64)
def _base_config(selections: tuple[str, ...]) -> DictConfig:
    return _compose(selections)


def config_keys(selections: Sequence[str]) -> set[str]:
    """Every dotted key (nodes and leaves) of the config composed from group ``selections``."""
    return set(_dotted_keys(_base_config(tuple(selections))))


def check_override_keys(overrides: Iterable[Override], known: set[str]) -> None:
    """Refuse an override whose key no config defines (``+key=`` too: a misspelt key would make
    a new run that claims an experiment it never ran), naming the closest existing keys."""
    for override in overrides:
        key = override.key_or_group
        if override.package is not None or key in known or key.startswith("hydra."):
            continue
        if any(key.startswith(f"{free}.") for free in FREE_FORM_KEYS):
            continue
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.8)
        hint = f"; did you mean {' or '.join(close)}?" if close else _other_option(key)
        raise ConfigError(
            f"override {override.input_line!r}: no config defines the key {key!r}{hint} "
            f"(only keys under {', '.join(FREE_FORM_KEYS)} are free-form)"
        )


# The group options a flag of `bench run` selects (others are selected as group=option).
_GROUP_FLAGS = {"launcher": "--launcher", "dataset": "--dataset"}


def _other_option(key: str) -> str:
    """A hint for a key that another option of its config group defines:
    ``launcher.partition`` → "; it is a setting of launcher slurm: add --launcher slurm"."""
    group = key.split(".", 1)[0]
    if "." not in key or not any((folder / group).is_dir() for folder in config_dirs()):
        return ""
    for option in group_options(group):
        try:
            keys = config_keys([f"{group}={option}"])
        except ConfigError:  # an option that does not compose alone: no hint from it
            continue
        if key in keys:
            flag = _GROUP_FLAGS.get(group)
            add = f"{flag} {option}" if flag else f"{group}={option}"
            return f"; it is a setting of {group} {option}: add {add}"
    return ""


def _dotted_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted keys of a config node, without resolving its values."""
    keys = []
    for key, value in cfg.items_ex(resolve=False) if OmegaConf.is_dict(cfg) else []:
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if OmegaConf.is_dict(value):
            keys.extend(_dotted_keys(value, f"{dotted}."))
    return keys


def _missing_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``."""
    missing = []
    for key in cfg:
        dotted = f"{prefix}{key}"
        try:
            value = cfg[key]
        except MissingMandatoryValue:
            missing.append(dotted)
            continue
        if OmegaConf.is_config(value) and not OmegaConf.is_list(value):
            missing.extend(_missing_keys(value, f"{dotted}."))
    return missing


def _check_protocol_dataset(cfg: DictConfig) -> None:
    """Refuse a protocol pinned to some datasets (``for_datasets``) on another: without
    ``--dataset rafdb``, ``+experiment=rafdb_adacm`` would train its recipe on synthfer."""
    allowed = [str(name) for name in cfg.get("for_datasets") or []]
    name = OmegaConf.select(cfg, "dataset.name")
    if allowed and name not in allowed:
        raise ConfigError(
            f"the protocol {cfg.get('tag')!r} is for --dataset {' or '.join(allowed)}, not "
            f"{name}: add --dataset {allowed[0]} (a dataset config of your own: "
            f"for_datasets=[{name}])"
        )


def _unset_requirements(cfg: DictConfig) -> list[str]:
    """The keys a protocol lists under ``requires`` that are still null. A ``???`` in an
    experiment config cannot express this: merging ``???`` onto a default leaves the default."""
    required = cfg.get("requires") or []
    return [key for key in required if OmegaConf.select(cfg, str(key)) is None]
