"""Compose one resolved config per run from the Hydra config groups in ``configs/``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from harness.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# What a `???` value means, for the datasets that need a path from the user.
_MISSING_HINTS = {
    "dataset.root": "the dataset folder on this machine, e.g. --data-root /data/RAF-DB "
    "(RAF-DB: the folder holding EmoLabel/ and Image/; AffectNet: the folder holding "
    "training.csv, validation.csv and Manually_Annotated_Images/)",
}


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
    """The folder holding ``config.yaml`` and the config groups."""
    if not (CONFIG_DIR / "config.yaml").is_file():
        raise ConfigError(
            f"config folder not found at {CONFIG_DIR}: install fer-bench from a checkout "
            "(pip install -e .) so that configs/ sits beside harness/"
        )
    return CONFIG_DIR


def group_options(group: str) -> list[str]:
    """The options of one config group, e.g. ``group_options("dataset")``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose_config(overrides: Sequence[str]) -> dict[str, Any]:
    """Compose ``config.yaml`` with Hydra overrides and return it resolved, as plain data.

    Raises :class:`ConfigError` with the offending override or the missing key named.
    """
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except HydraException as err:
        hint = f"\n{QUOTING_HINT}" if "grammar" in str(err) else ""
        raise ConfigError(f"bad config override: {err}{hint}") from None
    for key in _missing_keys(cfg):
        hint = _MISSING_HINTS.get(key, f"set it on the command line: {key}=...")
        raise ConfigError(f"config value {key} is required: {hint}")
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(f"config does not resolve: {err}") from None


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
