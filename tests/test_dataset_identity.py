"""A dataset's identity is its content, not its path: the same RAF-DB-layout folder copied
elsewhere (under a name Hydra's grammar refuses: spaces, accents, brackets, commas, ``=``) gives
the same run ids, so a finished result is skipped; a changed label line gives new ids; results
written before content fingerprints keep their ids and stay in the leaderboard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import compose_config, quote_value
from harness.data import fingerprint
from harness.data.synthfer import SynthConfig, ensure_synthfer
from harness.errors import ConfigError
from harness.leaderboard import leaderboard_tables
from harness.plan import build_plan
from harness.spec import config_hash, slug
from harness.store import load_results

ODD_NAME = "Ráf DB [copy], a=b (ü) #1 it's"
LABELS = Path("EmoLabel") / "list_patition_label.txt"


@pytest.fixture
def rafdb_copies(cache_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of one small RAF-DB-layout dataset (synthfer's faces), one under an odd name."""
    source = ensure_synthfer(
        cache_dir, SynthConfig(train_size=280, test_size=140, image_size=48, seed=1234)
    )
    plain, odd = tmp_path / "RAF-DB", tmp_path / "data" / ODD_NAME
    shutil.copytree(source, plain)
    shutil.copytree(source, odd)
    return plain, odd


def _tiny_rafdb(tiny: list[str]) -> list[str]:
    """The tiny settings for the RAF-DB config (its backbone and loader defaults are large)."""
    return ["backbone=fer_cnn", *(o for o in tiny if not o.startswith("dataset.generate."))]


def _ids(root: Path, tiny: list[str]) -> list[str]:
    specs = build_plan(
        "supervised",
        "25%,100%",
        "0,1",
        "rafdb",
        [*_tiny_rafdb(tiny), f"dataset.root={quote_value(str(root))}"],
    )
    return [s.run_id for s in specs]


@pytest.mark.slow
def test_the_same_data_elsewhere_is_the_same_run_and_a_changed_label_is_not(
    rafdb_copies: tuple[Path, Path], tiny: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, odd = rafdb_copies
    assert _ids(plain, tiny) == _ids(odd, tiny)
    # Cached: planning again reads no label file and sizes no image.
    monkeypatch.setattr(fingerprint, "compute_fingerprint", lambda root: pytest.fail("recomputed"))
    before = _ids(odd, tiny)
    monkeypatch.undo()

    lines = (odd / LABELS).read_text().splitlines(keepends=True)
    name, label = lines[3].split()
    lines[3] = f"{name} {int(label) % 7 + 1}\n"  # one training label changed
    (odd / LABELS).write_text("".join(lines))
    changed = _ids(odd, tiny)
    assert not set(changed) & set(before)
    assert _ids(plain, tiny) == before  # the untouched copy is still the same run

    (odd / "Image" / "aligned" / "train_00001_aligned.jpg").unlink()  # one image fewer
    assert not set(_ids(odd, tiny)) & set(changed)


@pytest.mark.slow
def test_a_run_on_an_odd_path_is_skipped_on_another_copy(
    rafdb_copies: tuple[Path, Path], tiny: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", "300")
    plain, odd = rafdb_copies
    results = tmp_path / "results"
    args = ["run", "--methods", "supervised", "--labels", "25%", "--dataset", "rafdb",
            "--no-progress", "--results-dir", str(results), *_tiny_rafdb(tiny)]  # fmt: skip
    assert main([*args, "--data-root", str(odd)]) == 0
    (path,) = (results / "rafdb").glob("*.json")
    result = json.loads(path.read_text())
    assert result["config"]["dataset"]["root"] == str(odd)
    assert result["config"]["dataset"]["content"].startswith("sha256:")
    capsys.readouterr()

    assert main([*args, f"dataset.root={plain}"]) == 0  # the same data in another folder
    out = capsys.readouterr().out
    assert "done (skipped)" in out and result["run_id"] in out
    assert len(list((results / "rafdb").glob("*.json"))) == 1

    # A result written before fingerprints (its id hashed the path) keeps its id and shows.
    legacy = json.loads(path.read_text())
    del legacy["config"]["dataset"]["content"]
    legacy["config_hash"] = config_hash(legacy["config"])
    legacy["seed"], legacy["config"]["seed"] = 1, 1
    legacy["run_id"] = f"supervised__{slug('25%')}__seed1__{legacy['config_hash'][:8]}"
    (results / "rafdb" / f"{legacy['run_id']}.json").write_text(json.dumps(legacy))
    assert {r["run_id"] for r in load_results(results)} == {result["run_id"], legacy["run_id"]}
    # Identified by its path, not its content: another section (nothing says it is the same data).
    tables = leaderboard_tables(load_results(results))
    assert len(tables) == 2 and all("supervised" in body for body in tables.values())


def test_an_unquoted_odd_path_says_how_to_quote(rafdb_copies: tuple[Path, Path]) -> None:
    _, odd = rafdb_copies
    with pytest.raises(ConfigError, match=r"quote the value inside the override.*--data-root"):
        compose_config(["dataset=rafdb", f"dataset.root={odd}"])
    for path in (str(odd), "/a/b\\", "/a/${x}", "/a\\'b", "/x,y=z[1]"):
        composed = compose_config(["dataset=rafdb", f"dataset.root={quote_value(path)}"])
        assert composed["dataset"]["root"] == path


def test_a_missing_root_is_named_before_anything_runs(tmp_path: Path) -> None:
    from harness.errors import DatasetError

    with pytest.raises(DatasetError, match=f"dataset folder not found: {tmp_path / 'gone'}"):
        build_plan("supervised", "10%", "0", "rafdb", [f"dataset.root={tmp_path / 'gone'}"])


@pytest.mark.slow
def test_a_checkpoint_made_on_one_copy_resumes_on_another(
    rafdb_copies: tuple[Path, Path], tiny: list[str], tmp_path: Path
) -> None:
    from harness.engine import TrainingStopped
    from harness.worker import run_spec

    plain, odd = rafdb_copies
    results = tmp_path / "results"
    (on_odd,) = build_plan(
        "supervised",
        "25%",
        "0",
        "rafdb",
        [*_tiny_rafdb(tiny), f"dataset.root={quote_value(str(odd))}"],
    )
    with pytest.raises(TrainingStopped):  # stopped after its first step, which is checkpointed
        run_spec(on_odd, results, show_progress=False, stop_requested=lambda: True)
    (on_plain,) = build_plan(
        "supervised", "25%", "0", "rafdb", [*_tiny_rafdb(tiny), f"dataset.root={plain}"]
    )
    assert on_plain.run_id == on_odd.run_id
    result = run_spec(on_plain, results, show_progress=False)
    assert result["timing"]["resumed_from_step"] == 1
    assert result["config"]["dataset"]["root"] == str(plain)
