"""Kept weights and ``bench eval``: a tiny synthfer run's weights file, and the run evaluated on
the same faces laid out as other datasets (class folders renamed to synonyms and reordered;
AffectNet-8 with Contempt; RAF-DB's class-folder copy) through the real ``bench`` command."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import bench as bench_at_width

from harness.classes import ClassMappingError, canonical, map_classes
from harness.cli import main
from harness.data.datasets import load_dataset
from harness.data.images import load_face
from harness.data.table import AFFECTNET_CLASSES, RAFDB_CLASSES, FERDataset
from harness.evaluate import EvalSettings, score
from harness.leaderboard import cross_dataset_tables
from harness.saved_model import build_from_weights, read_weights

# Rich wraps to the terminal width: a fixed one keeps each message on the lines asserted.
bench = functools.partial(bench_at_width, columns=80)

# RAF-DB class → a folder name a class-folder dataset might use for it.
SYNONYM_FOLDERS = {
    "Surprise": "surprised",
    "Fear": "Fearful",
    "Disgust": "disgusted",
    "Happiness": "happy",
    "Sadness": "SAD",
    "Anger": "Angry",
    "Neutral": "neutral",
}
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
    "valence,arousal\n"
)
CONTEMPT_IMAGES = 9  # AffectNet-8 test images labelled Contempt (code 7)


def eval_overrides(tiny: list[str]) -> list[str]:
    """The test-side settings of the tiny runs: cache, workers, eval batch, one thread (the
    runs evaluated with one thread; CPU sums may depend on the count)."""
    keep = ("data.cache_dir", "data.num_workers", "data.eval_batch_size", "train.threads")
    return [o for o in tiny if o.startswith(keep)] + ["train.device=cpu"]


@pytest.fixture(scope="module")
def trained(tiny: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One finished tiny synthfer run: (results folder, its result)."""
    results = tmp_path_factory.mktemp("eval") / "results"
    args = ["run", "--methods", "supervised", "--labels", "25%", "--results-dir", str(results)]
    assert main([*args, "--no-progress", *tiny]) == 0
    (path,) = (results / "synthfer").glob("*.json")
    return results, json.loads(path.read_text())


@pytest.fixture(scope="module")
def synth(trained: tuple[Path, dict]) -> FERDataset:
    """The synthfer dataset the run trained on (its JPEG files on disk)."""
    return load_dataset(trained[1]["config"])


def copy_split(paths, labels, folder_of, root: Path, limit: int | None = None) -> None:
    """Copy JPEG files byte for byte into ``root/<folder_of(label)>/`` (no re-encoding: the
    same bytes decode to the same pixels, which is what makes "exactly" a fair demand)."""
    seen: dict[int, int] = {}
    for path, label in zip(paths, labels, strict=True):
        seen[label] = seen.get(label, 0) + 1
        if limit is not None and seen[label] > limit:
            continue
        target = root / folder_of(int(label)) / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def make_synonym_folders(synth: FERDataset, root: Path) -> Path:
    """synthfer's test faces as a class-folder dataset with synonym, reordered class names."""
    name = lambda label: SYNONYM_FOLDERS[RAFDB_CLASSES[label]]  # noqa: E731
    copy_split(synth.test.paths, synth.test.labels, name, root / "test")
    copy_split(synth.train.paths, synth.train.labels, name, root / "train", limit=2)
    return root


def make_affectnet8(synth: FERDataset, root: Path) -> Path:
    """synthfer's faces in AffectNet-8's CSV layout (already-cropped images), the codes
    mapped by name, and CONTEMPT_IMAGES extra test rows labelled Contempt plus rows of the
    never-used codes 8-10."""
    code = {name: AFFECTNET_CLASSES.index(name) for name in RAFDB_CLASSES}
    for split, table in (("training", synth.train), ("validation", synth.test)):
        rows = []
        extra = [(p, 7) for p in table.paths[:CONTEMPT_IMAGES]] + [(table.paths[0], 9)]
        pairs = [
            (p, code[RAFDB_CLASSES[int(y)]]) for p, y in zip(table.paths, table.labels, strict=True)
        ]
        for i, (path, expression) in enumerate(pairs + extra):
            rel = f"{i % 5}/{split}_{i}.jpg"
            target = root / "Manually_Annotated_Images" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            rows.append(f'{rel},0,0,48,48,"1.0;2.0",{expression},0.0,0.0\n')
        (root / f"{split}.csv").write_text(AFFECTNET_HEADER + "".join(rows))
    return root


def test_class_names_map_by_expression_not_position() -> None:
    assert canonical("3_Happy ") == canonical("happiness") == "Happiness"
    assert canonical("angry") == "Anger" and canonical("Surprised") == "Surprise"
    mapping = map_classes(RAFDB_CLASSES, AFFECTNET_CLASSES)
    assert mapping.test_only == ("Contempt",) and mapping.model_only == ()
    assert [(AFFECTNET_CLASSES[t], RAFDB_CLASSES[m]) for t, m in mapping.pairs] == [
        (name, name) for name in AFFECTNET_CLASSES[:7]
    ]
    back = map_classes(AFFECTNET_CLASSES, RAFDB_CLASSES)
    assert back.model_only == ("Contempt",) and back.test_only == ()
    folders = tuple(sorted(SYNONYM_FOLDERS.values()))
    pairs = map_classes(RAFDB_CLASSES, folders).pairs
    assert {folders[t]: RAFDB_CLASSES[m] for t, m in pairs} == {
        v: k for k, v in SYNONYM_FOLDERS.items()
    }
    with pytest.raises(ClassMappingError, match="no class of the test set"):
        map_classes(RAFDB_CLASSES, ("cat", "dog"))
    with pytest.raises(ClassMappingError, match="'happy' and 'Happiness' both name"):
        map_classes(RAFDB_CLASSES, ("happy", "Happiness", "sad"))


class ColourClassifier(torch.nn.Module):
    """Logit k is high when the image's red level is 10 + 20k: a model whose every answer is
    known, to test the mapping of predictions without relying on what training learnt."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        levels = (10 + 20 * torch.arange(num_classes) - 0.485 * 255) / (0.229 * 255)
        self.register_buffer("levels", levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0].mean(dim=(1, 2))
        return -(red[:, None] - self.levels[None, :]).abs()


def test_predictions_are_mapped_by_name_and_absent_classes_masked() -> None:
    """An AffectNet-8 model on RAF-DB's class order: each face coloured as the model's class of
    its true expression is scored right; a face coloured as Contempt (which RAF-DB lacks) gets
    the nearest allowed class (Anger), never Contempt."""
    mapping = map_classes(AFFECTNET_CLASSES, RAFDB_CLASSES)
    level = {name: 10 + 20 * i for i, name in enumerate(AFFECTNET_CLASSES)}
    faces, targets = [], []
    for label, name in enumerate(RAFDB_CLASSES):
        for _ in range(label + 1):  # class sizes 1..7, so accuracy weights classes unequally
            faces.append(np.full((8, 8, 3), level[name], dtype=np.uint8))
            targets.append(label)
    faces.append(np.full((8, 8, 3), level["Contempt"], dtype=np.uint8))
    targets.append(RAFDB_CLASSES.index("Neutral"))
    settings = EvalSettings(
        batch_size=5, device=torch.device("cpu"), amp=False, channels_last=False
    )
    metrics = score(mapping, ColourClassifier(8), faces, np.asarray(targets), settings)
    matrix = np.asarray(metrics["confusion_matrix"])
    neutral, anger = RAFDB_CLASSES.index("Neutral"), RAFDB_CLASSES.index("Anger")
    expected = np.diag(np.arange(1, 8))
    expected[neutral, anger] = 1
    assert np.array_equal(matrix, expected)
    assert metrics["top1"] == pytest.approx(100 * 28 / 29, abs=1e-4)


def cross_record(seed: int, test: str, top1: float, own: float) -> dict:
    """A minimal cross-dataset result, as ``bench eval`` writes one."""
    return {
        "kind": "cross_dataset",
        "run_id": f"fixmatch__10pct__seed{seed}__abcd",
        "train_dataset": "synthfer",
        "method": "fixmatch",
        "method_label": "fixmatch",
        "labels": "10%",
        "seed": seed,
        "tag": "",
        "test_dataset": test,
        "metrics": {"top1": top1, "mean_class_acc": top1 - 10, "macro_f1": top1 - 20},
        "in_domain": {"top1": own, "mean_class_acc": own - 10, "macro_f1": own - 20},
    }


def test_cross_dataset_table_rows_runs_columns_test_sets() -> None:
    """Seeds aggregate per cell; the own test set counts each run once although it has two
    cross results; a test set named like the training set stays its own column; AffectNet's
    column shows mean class accuracy."""
    records = [
        cross_record(0, "affectnet8", 40.0, 70.0),
        cross_record(1, "affectnet8", 44.0, 72.0),
        cross_record(0, "synthfer", 60.0, 70.0),
    ]
    text = cross_dataset_tables(records)
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "run",
        "synthfer (own test set): top-1 accuracy",
        "affectnet8: mean class accuracy",
        "synthfer: top-1 accuracy",
    ]
    row = next(line for line in text.splitlines() if line.startswith("| fixmatch at 10%"))
    assert [c.strip() for c in row.strip("|").split("|")][1:] == [
        "71.00 ± 1.41 (2)",
        "32.00 ± 2.83 (2)",
        "60.00 (1)",
    ]
    assert cross_dataset_tables([]) == ""


@pytest.mark.slow
def test_weights_are_kept_and_load_with_plain_torch(trained: tuple[Path, dict]) -> None:
    results, result = trained
    work = results / "runs" / result["run_id"]
    assert not (work / "checkpoint.pt").exists()  # the checkpoint still goes
    payload = torch.load(work / "weights.pt", weights_only=True)
    meta = payload["meta"]
    assert meta["classes"] == list(RAFDB_CLASSES)
    assert meta["config_hash"] == result["config_hash"]
    assert meta["backbone"]["name"] == "fer_cnn" and meta["input"]["image_size"] == 32
    assert json.loads(json.dumps(meta)) == meta
    assert set(payload) == {"meta", "ema", "student"}
    assert result["saved_weights"]["bytes"] == (work / "weights.pt").stat().st_size
    # EMA and student differ (ema.decay=0.9 over 40 steps), and both rebuild strictly.
    assert any(not torch.equal(payload["ema"][k], payload["student"][k]) for k in payload["ema"])
    for which in ("ema", "student"):
        model = build_from_weights(read_weights(work / "weights.pt"), which)
        assert not model.training


@pytest.mark.slow
def test_forced_rerun_archives_weights_and_save_weights_off_keeps_none(
    tiny: list[str], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    args = ["run", "--methods", "supervised", "--labels", "25%", "--results-dir", str(results)]
    overrides = ["--no-progress", *tiny, "train.steps=4"]
    assert main([*args, *overrides]) == 0
    (path,) = (results / "synthfer").glob("*.json")
    work = results / "runs" / path.stem
    first = (work / "weights.pt").read_bytes()
    # Off for the forced rerun: its result records none, and the old weights (the superseded
    # result's) move to superseded/ rather than stay beside a result they do not belong to.
    assert main([*args, "--force", *overrides, "train.save_weights=false"]) == 0
    assert json.loads(path.read_text())["saved_weights"] is None
    assert not (work / "weights.pt").exists()
    (archived,) = (work / "superseded").glob("*.weights.pt")
    assert archived.read_bytes() == first


@pytest.mark.slow
def test_eval_on_renamed_folder_reproduces_own_accuracy(
    trained: tuple[Path, dict], synth: FERDataset, tiny: list[str], tmp_path: Path
) -> None:
    results, result = trained
    root = make_synonym_folders(synth, tmp_path / "synonyms")
    args = ["eval", "--runs", result["run_id"], "--results-dir", str(results), "--on", "folder"]
    done = bench(
        *args, f"dataset.root={root}", "dataset.name=synonyms", *eval_overrides(tiny), cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    path = results / "synthfer" / "cross" / f"{result['run_id']}__on_synonyms.json"
    cross = json.loads(path.read_text())
    own = result["metrics"]
    for metric in ("top1", "mean_class_acc", "macro_f1"):
        assert cross["metrics"][metric] == own[metric]
    assert cross["student_metrics"]["top1"] == result["student_metrics"]["top1"]
    assert cross["num_excluded"] == 0 and cross["num_evaluated"] == len(synth.test)
    # The same predictions, image for image: the confusion matrix is the run's, reordered
    # (not vacuous: the tiny model predicts several classes).
    assert np.count_nonzero(np.asarray(own["confusion_matrix"]).sum(axis=0)) >= 3
    folders = [SYNONYM_FOLDERS[c] for c in RAFDB_CLASSES]
    order = [folders.index(name) for name in sorted(folders)]
    expected = np.asarray(own["confusion_matrix"])[np.ix_(order, order)]
    assert np.array_equal(np.asarray(cross["metrics"]["confusion_matrix"]), expected)
    assert list(cross["metrics"]["per_class_acc"]) == sorted(folders)

    # Again: kept, not rewritten. With --force: replaced, the old one archived.
    again = bench(
        *args, f"dataset.root={root}", "dataset.name=synonyms", *eval_overrides(tiny), cwd=tmp_path
    )
    assert again.returncode == 0 and "skipped" in again.stdout
    assert json.loads(path.read_text()) == cross
    forced = bench(
        *args,
        "--force",
        f"dataset.root={root}",
        "dataset.name=synonyms",
        *eval_overrides(tiny),
        cwd=tmp_path,
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    archived = list(
        (results / "runs" / result["run_id"] / "superseded").glob("*__on_synonyms.json")
    )
    assert len(archived) == 1 and json.loads(archived[0].read_text()) == cross

    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    board = (results / "leaderboard.md").read_text()
    assert "## Cross-dataset" in board and "trained on synthfer" in board
    row = next(line for line in board.splitlines() if line.startswith("| supervised at 25%"))
    assert row.count(f"{own['top1']:.2f} (1)") == 2  # own test set and the synonym copy


@pytest.mark.slow
def test_eval_on_affectnet8_excludes_and_counts_contempt(
    trained: tuple[Path, dict], synth: FERDataset, tiny: list[str], tmp_path: Path
) -> None:
    results, result = trained
    root = make_affectnet8(synth, tmp_path / "affectnet")
    code = main(
        [
            "eval",
            "--methods",
            "supervised",
            "--labels",
            "25%",
            "--results-dir",
            str(results),
            "--on",
            "affectnet8",
            f"dataset.root={root}",
            *eval_overrides(tiny),
        ]
    )
    assert code == 0
    cross = json.loads(
        (results / "synthfer" / "cross" / f"{result['run_id']}__on_affectnet8.json").read_text()
    )
    assert cross["excluded_per_class"] == {"Contempt": CONTEMPT_IMAGES}
    assert cross["classes"]["test_only"] == ["Contempt"] and cross["classes"]["model_only"] == []
    assert cross["num_evaluated"] == len(synth.test)
    assert cross["metrics"]["top1"] == result["metrics"]["top1"]
    assert list(cross["metrics"]["per_class_acc"]) == list(AFFECTNET_CLASSES[:7])


@pytest.mark.slow
def test_affectnet8_model_on_rafdb_masks_contempt(
    synth: FERDataset, tiny: list[str], tmp_path: Path
) -> None:
    """The other direction: a model with a Contempt output, tested on RAF-DB's folder copy."""
    results = tmp_path / "results"
    affectnet = make_affectnet8(synth, tmp_path / "affectnet")
    training = [o for o in tiny if not o.startswith("dataset.generate")]
    assert (
        main(
            [
                "run",
                "--methods",
                "supervised",
                "--labels",
                "25%",
                "--dataset",
                "affectnet8",
                "--results-dir",
                str(results),
                "--no-progress",
                f"dataset.root={affectnet}",
                "backbone=fer_cnn",
                "data.image_size=32",
                *training,
            ]
        )
        == 0
    )
    rafdb = tmp_path / "rafdb"
    folder = lambda label: str(label + 1)  # noqa: E731  (RAF-DB's folders are 1..7)
    copy_split(synth.test.paths, synth.test.labels, folder, rafdb / "test")
    copy_split(synth.train.paths, synth.train.labels, folder, rafdb / "train", limit=2)
    args = ["eval", "--methods", "supervised", "--labels", "25%", "--dataset", "affectnet8"]
    code = main(
        [
            *args,
            "--results-dir",
            str(results),
            "--on",
            "rafdb",
            f"dataset.root={rafdb}",
            *eval_overrides(tiny),
        ]
    )
    assert code == 0
    (path,) = (results / "affectnet8" / "cross").glob("*__on_rafdb.json")
    cross = json.loads(path.read_text())
    assert cross["classes"]["model_only"] == ["Contempt"] and cross["num_excluded"] == 0

    # Independently: the EMA model's logits on the decoded faces, Contempt's column dropped.
    payload = read_weights(results / "runs" / cross["run_id"] / "weights.pt")
    model = build_from_weights(payload, "ema")
    faces = np.stack([load_face(p, None, 32) for p in synth.test.paths])
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(255)
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1)
        for v in (payload["meta"]["input"]["mean"], payload["meta"]["input"]["std"])
    )
    with torch.no_grad():
        logits = model((x - mean) / std)[:, :7]
    predicted = [AFFECTNET_CLASSES[i] for i in logits.argmax(1).tolist()]
    truth = [RAFDB_CLASSES[y] for y in synth.test.labels]
    accuracy = 100 * np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert cross["metrics"]["top1"] == pytest.approx(accuracy, abs=1e-4)


@pytest.mark.slow
def test_missing_weights_and_unmappable_classes_are_one_line_errors(
    trained: tuple[Path, dict], synth: FERDataset, tiny: list[str], tmp_path: Path
) -> None:
    results, result = trained
    copy = tmp_path / "results"
    shutil.copytree(results / "synthfer", copy / "synthfer", ignore=shutil.ignore_patterns("cross"))
    args = ["eval", "--runs", result["run_id"], "--results-dir", str(copy), "--on", "folder"]
    root = make_synonym_folders(synth, tmp_path / "synonyms")
    missing = bench(*args, f"dataset.root={root}", *eval_overrides(tiny), cwd=tmp_path)
    assert missing.returncode == 1
    lines = missing.stdout.strip().splitlines()
    assert len(lines) == 1 and "weights.pt: no kept weights for run" in lines[0], missing.stdout

    # A weights file that is not the one the result recorded (retrained, edited, copied over).
    other = copy / "runs" / result["run_id"] / "weights.pt"
    other.parent.mkdir(parents=True)
    payload = torch.load(results / "runs" / result["run_id"] / "weights.pt", weights_only=True)
    payload["ema"]["classifier.bias"] += 1.0
    torch.save(payload, other)
    replaced = bench(*args, f"dataset.root={root}", *eval_overrides(tiny), cwd=tmp_path)
    assert replaced.returncode == 1
    assert replaced.stdout.strip().endswith("retrains it") and "SHA-256 differs" in replaced.stdout

    animals = tmp_path / "animals"
    copy_split(
        synth.test.paths, synth.test.labels, lambda y: ("cat", "dog")[y % 2], animals / "test"
    )
    copy_split(
        synth.test.paths, synth.test.labels, lambda y: ("cat", "dog")[y % 2], animals / "train"
    )
    args = ["eval", "--runs", result["run_id"], "--results-dir", str(results), "--on", "folder"]
    unmapped = bench(*args, f"dataset.root={animals}", *eval_overrides(tiny), cwd=tmp_path)
    assert unmapped.returncode == 1
    lines = unmapped.stdout.strip().splitlines()
    assert len(lines) == 1 and "no class of the test set (cat, dog) matches" in lines[0]
    assert not list((results / "synthfer" / "cross").glob("*__on_folder.json"))

    unknown = bench(*args[:-1], "nosuchset", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown dataset" in unknown.stdout


@pytest.mark.slow
def test_eval_of_a_grid_chooses_the_run_with_kept_weights_and_says_so(
    trained: tuple[Path, dict],
    synth: FERDataset,
    tiny: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beside the user's run, a result of the same cell without kept weights (as a committed
    result is): the grid picks the user's run and names it; with two runs that have weights
    it refuses, naming both, until --tag chooses. --data-root takes a path as it is."""
    monkeypatch.setenv("COLUMNS", "300")  # one line per message
    results, result = trained
    copy = tmp_path / "results"
    shutil.copytree(results / "synthfer", copy / "synthfer", ignore=shutil.ignore_patterns("cross"))
    shutil.copytree(results / "runs" / result["run_id"], copy / "runs" / result["run_id"])
    committed = {**result, "run_id": "supervised__25pct__seed0__0000aaaa", "saved_weights": None}
    (copy / "synthfer" / f"{committed['run_id']}.json").write_text(json.dumps(committed))
    root = make_synonym_folders(synth, tmp_path / "syn onyms [copy]")
    args = ["eval", "--methods", "supervised", "--labels", "25%", "--seeds", "0",
            "--results-dir", str(copy), "--on", "folder", "--data-root", str(root),
            "dataset.name=synonyms", *eval_overrides(tiny)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        f"chose {result['run_id']} for supervised at 25%, seed 0 (1 other matching runs "
        "without kept weights)" in out
    )
    assert (copy / "synthfer" / "cross" / f"{result['run_id']}__on_synonyms.json").is_file()

    # A second run of the cell with kept weights, tagged: ambiguous without --tag.
    mine = {**result, "run_id": "supervised__25pct__seed0__1111bbbb", "tag": "mine"}
    (copy / "synthfer" / f"{mine['run_id']}.json").write_text(json.dumps(mine))
    shutil.copytree(copy / "runs" / result["run_id"], copy / "runs" / mine["run_id"])
    assert main(args) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "supervised at 25%, seed 0: 2 finished runs with kept weights match" in out
    assert f"{mine['run_id']} (tag mine, 40 steps)" in out and "choose with --tag" in out
    # Two runs of one tag (a 40- and a 60-step run): --tag cannot choose, --runs can.
    twin = {**mine, "run_id": "supervised__25pct__seed0__2222cccc"}
    twin["timing"] = {**twin["timing"], "steps": 60}
    (copy / "synthfer" / f"{twin['run_id']}.json").write_text(json.dumps(twin))
    shutil.copytree(copy / "runs" / result["run_id"], copy / "runs" / twin["run_id"])
    assert main([*args, "--tag", "mine"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "(tag mine, 60 steps)); name runs with --runs ID,..." in out
    (copy / "synthfer" / f"{twin['run_id']}.json").unlink()
    assert main([*args, "--tag", "mine"]) == 0
    assert (
        f"chose {mine['run_id']} for supervised at 25%, seed 0 [tag mine]"
        in capsys.readouterr().out
    )

    # Every matching run without kept weights: refused, naming them (exit 1, as before).
    assert main([*args, "--tag", "nosuch"]) == 2  # nothing finished under that tag
    shutil.rmtree(copy / "runs")
    assert main(args) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "no kept weights for any of its 3 finished runs" in out
