"""``--labels``: every accepted and malformed form, split sizes per protocol, purity, nesting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.errors import LabelProtocolError
from harness.labels import (
    LabelProtocol,
    class_quotas,
    labelled_split,
    parse_protocol,
    parse_protocols,
    split_summary,
)

# RAF-DB's training set per class: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral.
RAF_COUNTS = np.array([1290, 281, 717, 4772, 1982, 705, 2524])
RAF_NAMES = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
# Shuffled so that class members are interleaved, as in a real label file.
RAF_TARGETS = np.random.default_rng(123).permutation(np.repeat(np.arange(7), RAF_COUNTS))


def _split(text: str, seed: int = 0, targets: np.ndarray = RAF_TARGETS) -> np.ndarray:
    return labelled_split(targets, parse_protocol(text), seed=seed, num_classes=7)


def _per_class(indices: np.ndarray, targets: np.ndarray = RAF_TARGETS) -> list[int]:
    return np.bincount(targets[indices], minlength=7).tolist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10%", LabelProtocol("fraction", 0.1, "10%")),
        ("0.5%", LabelProtocol("fraction", 0.005, "0.5%")),
        (" 1% ", LabelProtocol("fraction", 0.01, "1%")),
        ("10.0%", LabelProtocol("fraction", 0.1, "10%")),
        ("100%", LabelProtocol("fraction", 1.0, "100%")),
        ("4000", LabelProtocol("total", 4000, "4000")),
        ("10", LabelProtocol("total", 10, "10")),
        ("25/class", LabelProtocol("per_class", 25, "25/class")),
    ],
)
def test_accepted_forms_parse_to_their_canonical_text(text: str, expected: LabelProtocol) -> None:
    assert parse_protocol(text) == expected


@pytest.mark.parametrize(
    "text", ["", " ", "abc", "0%", "150%", "-5", "25/klass", "10%%", "0", "0/class", "1e3", "10 %"]
)
def test_malformed_forms_name_the_three_accepted_ones(text: str) -> None:
    with pytest.raises(LabelProtocolError) as info:
        parse_protocols(text)
    message = str(info.value)
    assert repr(text) in message, "the message quotes what the user typed"
    for example in ("10%", "4000", "25/class"):
        assert example in message


def test_comma_lists_keep_order_and_drop_repeats() -> None:
    protocols = parse_protocols("1%, 4000,25/class,1.0%")
    assert [p.text for p in protocols] == ["1%", "4000", "25/class"]
    with pytest.raises(LabelProtocolError, match="empty item"):
        parse_protocols("10%,,25%")
    with pytest.raises(LabelProtocolError, match="'25/klass'"):
        parse_protocols("10%,25/klass")


def test_sort_key_orders_per_class_then_totals_then_fractions() -> None:
    texts = ["10%", "4000", "1%", "250/class", "100", "10/class", "100%"]
    ordered = sorted(texts, key=lambda t: parse_protocol(t).sort_key)
    assert ordered == ["10/class", "250/class", "100", "4000", "1%", "10%", "100%"]


def test_fraction_is_stratified_with_at_least_one_per_class() -> None:
    assert _per_class(_split("10%")) == [129, 28, 72, 477, 198, 70, 252]
    assert _per_class(_split("1%")) == [13, 3, 7, 48, 20, 7, 25]
    # 0.1% of Fear's 281 rounds to 0: every class still gets one.
    assert _per_class(_split("0.1%")) == [1, 1, 1, 5, 2, 1, 3]
    # 7% of 100 is 7 (not a float-rounding 7.000000000000001 artefact either way).
    assert class_quotas(np.array([100, 50]), parse_protocol("7%")).tolist() == [7, 4]
    everything = _split("100%", seed=5)
    assert np.array_equal(everything, np.arange(len(RAF_TARGETS)))


def test_total_is_class_balanced_by_water_filling() -> None:
    assert _per_class(_split("700")) == [100] * 7
    # 4000 / 7 > 281 = all of Fear: Fear gives all it has, the other six share the rest
    # (3719 = 6·619 + 5: one extra each for the five lowest class indices that still have some).
    assert _per_class(_split("4000")) == [620, 281, 620, 620, 620, 620, 619]
    quotas = class_quotas(np.array([2, 3, 50, 50]), parse_protocol("60"))
    assert quotas.tolist() == [2, 3, 28, 27], "both small classes capped, surplus shared"
    assert class_quotas(np.array([5, 5, 5]), parse_protocol("8")).tolist() == [3, 3, 2]
    assert class_quotas(RAF_COUNTS, parse_protocol(str(RAF_COUNTS.sum()))).tolist() == list(
        RAF_COUNTS
    )


def test_total_errors_say_what_is_wrong() -> None:
    with pytest.raises(LabelProtocolError, match="only 12271 images"):
        _split("20000")
    with pytest.raises(LabelProtocolError, match=r"fewer labels than classes \(7\)"):
        _split("5")
    assert len(_split("7")) == 7, "one per class is the smallest total"


def test_per_class_count_takes_what_a_class_has() -> None:
    assert _per_class(_split("300/class")) == [300, 281, 300, 300, 300, 300, 300]
    assert class_quotas(np.array([10, 300, 0]), parse_protocol("25/class")).tolist() == [10, 25, 0]


def test_split_is_sorted_int64_and_holds_the_right_classes() -> None:
    split = _split("25/class")
    assert split.dtype == np.int64
    assert np.all(np.diff(split) > 0)
    assert _per_class(split) == [25] * 7


def test_split_is_a_pure_function_of_targets_protocol_and_seed() -> None:
    assert np.array_equal(_split("10%"), _split("10%"))
    assert not np.array_equal(_split("10%", seed=0), _split("10%", seed=1))


def test_split_takes_the_first_k_of_a_seeded_per_class_permutation() -> None:
    # The documented rule, spelled out: it fixes which images every method sees for a seed.
    targets = np.array([1, 0, 2, 1, 0, 1, 2, 0, 1, 1])
    split = labelled_split(targets, parse_protocol("2/class"), seed=7, num_classes=3)
    expected = [
        np.random.default_rng([7, c]).permutation(np.flatnonzero(targets == c))[:2]
        for c in range(3)
    ]
    assert split.tolist() == sorted(np.concatenate(expected).tolist())


@pytest.mark.parametrize(
    ("small", "large"),
    [("1%", "10%"), ("10%", "25%"), ("25%", "100%"), ("100", "4000"), ("10/class", "250/class")],
)
def test_splits_are_nested_as_the_amount_grows(small: str, large: str) -> None:
    for seed in (0, 1):
        assert set(_split(small, seed)) < set(_split(large, seed))


def test_split_summary_records_sizes_and_a_hash_of_the_indices() -> None:
    names = ("a", "b", "c")
    targets = np.array([0, 1, 2, 0, 1, 2])
    summary = split_summary(np.array([3, 0, 1]), targets, names)
    assert summary["num_labelled"] == 3
    assert summary["per_class"] == {"a": 2, "b": 1, "c": 0}
    assert len(summary["hash"]) == 16
    assert summary["hash"] == split_summary(np.array([0, 1, 3]), targets, names)["hash"]
    assert summary["hash"] != split_summary(np.array([0, 1, 4]), targets, names)["hash"]


# Ada-CM's README table (github.com/hangyu94/Ada-CM): Fear, and every other class, per total.
ADACM_TABLE = {100: (10, 15), 400: (40, 60), 1000: (100, 150), 2000: (200, 300), 4000: (250, 625)}


@pytest.mark.parametrize("total", sorted(ADACM_TABLE))
def test_adacm_split_is_the_published_table(total: int) -> None:
    fear, others = ADACM_TABLE[total]
    indices = labelled_split(RAF_TARGETS, parse_protocol(f"adacm:{total}"), 0, 7, RAF_NAMES)
    assert _per_class(indices) == [others, fear, others, others, others, others, others]
    assert len(indices) == total


def test_adacm_splits_are_nested_across_sizes() -> None:
    sizes = sorted(ADACM_TABLE)
    for seed in (0, 1):
        splits = [set(_split(f"adacm:{n}", seed)) for n in sizes]
        assert all(a < b for a, b in itertools.pairwise(splits))


def test_explicit_per_class_counts_follow_the_class_order() -> None:
    protocol = parse_protocol("perclass:10/15/15/15/15/15/015")
    assert protocol.text == "perclass:10/15/15/15/15/15/15"
    assert protocol.kind == "class_counts" and protocol.value == 100
    assert _per_class(_split(protocol.text)) == [10, 15, 15, 15, 15, 15, 15]
    # The same counts as adacm:100, the same images: one rule draws both.
    assert set(_split("perclass:15/10/15/15/15/15/15")) == set(_split("adacm:100"))
    # No comma inside the form: a comma list of settings still splits on commas.
    assert [p.text for p in parse_protocols("adacm:100,perclass:1/2/3/4/5/6/7,10%")] == [
        "adacm:100",
        "perclass:1/2/3/4/5/6/7",
        "10%",
    ]


@pytest.mark.parametrize(
    ("text", "names", "message"),
    [
        ("adacm:300", RAF_NAMES, "adacm:100/400/1000/2000/4000 only"),
        ("bogus:100", RAF_NAMES, "no published split named 'bogus'"),
        ("perclass:1/2", RAF_NAMES, "2 counts for a dataset of 7 classes"),
        (
            "perclass:1/300/1/1/1/1/1",
            RAF_NAMES,
            "Fear has 281 training images, the split asks for 300",
        ),
        ("adacm:100", ("Neutral", *RAF_NAMES[1:]), "this dataset's are Neutral/Fear"),
    ],
)
def test_explicit_and_published_splits_refuse_what_the_dataset_cannot_give(
    text: str, names: tuple[str, ...], message: str
) -> None:
    with pytest.raises(LabelProtocolError, match=message):
        labelled_split(RAF_TARGETS, parse_protocol(text), 0, 7, names)


def test_sort_key_puts_published_splits_beside_totals_of_their_size() -> None:
    texts = ["10%", "adacm:4000", "100", "adacm:100", "25/class"]
    ordered = sorted(texts, key=lambda t: (parse_protocol(t).sort_key, t))
    assert ordered == ["25/class", "100", "adacm:100", "adacm:4000", "10%"]
