"""Which stored results a reading command looks at: ``--tag``, ``--methods``, ``--dataset``,
``--labels`` and ``--seeds`` of ``bench leaderboard``, ``report``, ``export`` and ``eval``, so
that a user's own runs need not be mixed with everything else in the results tree.

A result matches when it matches every flag given; a flag holds a comma list and matches any
of its items. A method matches by its leaderboard name (``dta_snl[snl=false]``) and, written
without a variant, by the method itself (``dta_snl`` also selects its variants and sweep
points).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError

# A filtered table is not the results' table: written here (under --results-dir), never over
# the committed leaderboard.md or the full export.
FILTERED_DIR = "filtered"


@dataclass(frozen=True)
class ResultFilter:
    """The selection; an empty field selects everything."""

    tags: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()

    @classmethod
    def parse(
        cls,
        tag: str | None = None,
        methods: str | None = None,
        dataset: str | None = None,
        labels: str | None = None,
        seeds: str | None = None,
    ) -> ResultFilter:
        """The filter of the command-line flags (None: not given). Label settings and seeds
        are read as ``bench run`` reads them (``10%,25/class``; ``0-2,5``)."""
        # Imported only for the flags that need them: the grid parsers pull in Hydra (a
        # quarter second), which a plain leaderboard never needs.
        if methods or labels or seeds:
            from harness.labels import parse_protocols
            from harness.plan import parse_seeds, split_top_level

        return cls(
            tags=tuple(_items(tag)),
            methods=tuple(split_top_level(methods)) if methods else (),
            datasets=tuple(_items(dataset)),
            labels=tuple(p.text for p in parse_protocols(labels)) if labels else (),
            seeds=tuple(parse_seeds(seeds)) if seeds else (),
        )

    def __bool__(self) -> bool:
        return any((self.tags, self.methods, self.datasets, self.labels, self.seeds))

    def matches(self, result: dict[str, Any]) -> bool:
        """Whether ``result`` (a run's result, or a cross-dataset result: its training set
        counts as its dataset) is selected."""
        dataset = result.get("train_dataset", result.get("dataset"))
        method, label = result.get("method"), result.get("method_label")
        return (
            (not self.tags or (result.get("tag") or "") in self.tags)
            and (not self.datasets or dataset in self.datasets)
            and (not self.methods or any(m in (label, method) for m in self.methods))
            and (not self.labels or result.get("labels") in self.labels)
            and (not self.seeds or result.get("seed") in self.seeds)
        )

    def apply(self, results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The selected results, in their order."""
        return [r for r in results if self.matches(r)]

    def select(self, results: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
        """:meth:`apply`, refusing a selection that keeps nothing: the error names what the
        results in ``where`` hold for the flags given (a typo is then plain to see)."""
        chosen = self.apply(results)
        if results and not chosen and self:
            raise ConfigError(
                f"no result in {where} matches {self.flags()}; {_present(self, results)}"
            )
        return chosen

    def flags(self) -> str:
        """The filter as command-line flags: ``--tag mine --seeds 0,1``."""
        parts = [
            ("--tag", self.tags),
            ("--methods", self.methods),
            ("--dataset", self.datasets),
            ("--labels", self.labels),
            ("--seeds", tuple(map(str, self.seeds))),
        ]
        return " ".join(f"{flag} {','.join(values)}" for flag, values in parts if values)


def _items(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _present(selection: ResultFilter, results: list[dict[str, Any]]) -> str:
    """What the results hold for each flag given: ``tags there: (none), synth_faces``."""
    fields = [
        ("tags", selection.tags, lambda r: r.get("tag") or "(none)"),
        ("methods", selection.methods, lambda r: r.get("method_label")),
        ("datasets", selection.datasets, lambda r: r.get("dataset", r.get("train_dataset"))),
        ("label settings", selection.labels, lambda r: r.get("labels")),
        ("seeds", selection.seeds, lambda r: r.get("seed")),
    ]
    return "; ".join(
        f"{name} there: {', '.join(sorted({str(value(r)) for r in results}))}"
        for name, given, value in fields
        if given
    )
