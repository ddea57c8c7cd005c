"""Command lines whose Hydra overrides may stand anywhere among the flags."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def parse_with_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> argparse.Namespace:
    """``argv`` parsed by ``parser``, overrides wherever they stand: argparse fills a positional
    list from one stretch of words, so ``a=1 --seeds 0-2 b=2`` would refuse ``b=2``; such words
    join ``overrides`` (where the command has it). An unknown flag is still refused."""
    args, extra = parser.parse_known_args(list(argv))
    late = [word for word in extra if not word.startswith("-")]
    if late and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *late]
        extra = [word for word in extra if word.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args
