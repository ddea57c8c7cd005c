"""A dataset folder's identity by content, so that a run's id does not depend on where the data
lies: the same RAF-DB copied to another disk, mount point or cluster gives the same run ids
(finished results are skipped, checkpoints resume), and a copy whose labels or image list
differ gives other ids.

The fingerprint covers every file under the root except hidden ones (names starting with
``.``): an image (``.jpg``, ``.jpeg``, ``.png``) by its relative path and size, any other file
(the label files: RAF-DB's ``EmoLabel/list_patition_label.txt``, AffectNet's CSVs) by its
relative path and the SHA-256 of its bytes. Pixels are not read: hashing ~300k AffectNet images
would take minutes; a changed image changes its size in all but contrived cases.

Computing it reads the label files and lists (and sizes) every image, once: it is cached in
``<cache_dir>/fingerprints/`` under the root's path, valid while the modification times of the
root's folders and the stat of its label files are unchanged. Editing or adding a label file,
or adding, removing or renaming an image, changes those; rewriting an image in place under the
same name does not (delete the cache file to force a recount).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.data.folder import IMAGE_SUFFIXES
from harness.errors import DatasetError
from harness.files import atomic_write_text

FINGERPRINT_VERSION = 1
CACHE_FOLDER = "fingerprints"


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative '/'-separated path, entry) of every non-hidden file and folder under root,
    folders before their contents, symbolic links followed."""
    stack = [("", str(root))]
    while stack:
        rel_dir, directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            raise DatasetError(f"cannot list dataset folder {directory}: {err}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}{entry.name}"
            yield rel, entry
            if entry.is_dir():
                stack.append((f"{rel}/", entry.path))


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat(entry: os.DirEntry[str]) -> os.stat_result:
    try:
        return entry.stat()
    except OSError as err:
        raise DatasetError(f"cannot read {entry.path}: {err}") from None


def cache_key(root: Path) -> str:
    """What the cached fingerprint of ``root`` is valid for: the modification times of its
    folders (they change when an entry is added, removed or renamed) and the size and
    modification time of its non-image files. Stats no image."""
    digest = hashlib.sha256(f"v{FINGERPRINT_VERSION}\0{root.stat().st_mtime_ns}\n".encode())
    for rel, entry in _walk(root):
        if entry.is_dir():
            line = f"d\0{rel}\0{_stat(entry).st_mtime_ns}\n"
        elif _is_image(entry.name):
            continue
        else:
            stat = _stat(entry)
            line = f"f\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def compute_fingerprint(root: Path) -> tuple[str, int]:
    """``sha256:<hex>`` of the listing described in the module docstring, and the number of
    files it covers. Independent of where ``root`` lies."""
    digest = hashlib.sha256(f"fer-bench dataset v{FINGERPRINT_VERSION}\n".encode())
    count = 0
    for rel, entry in _walk(root):
        if entry.is_dir():
            continue
        size = _stat(entry).st_size
        if _is_image(entry.name):
            line = f"{rel}\0{size}\n"
        else:
            try:
                line = f"{rel}\0{size}\0{_file_sha256(entry.path)}\n"
            except OSError as err:
                raise DatasetError(f"cannot read {entry.path}: {err}") from None
        digest.update(line.encode("utf-8", "surrogateescape"))
        count += 1
    return f"sha256:{digest.hexdigest()}", count


def _cache_file(cache_dir: Path, root: Path) -> Path:
    name = hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return cache_dir / CACHE_FOLDER / f"{name}.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Atomic: processes planning at once write the same text; none reads half."""
    with contextlib.suppress(OSError):  # a read-only cache only costs a recount next time
        atomic_write_text(path, json.dumps(data, indent=1))


def dataset_fingerprint(root: str | Path, cache_dir: Path) -> str:
    """The content fingerprint of the dataset folder ``root`` (see the module docstring),
    from the cache when the folder has not changed since it was computed.

    A missing or unreadable folder raises :class:`DatasetError` naming it: a run's identity
    needs its data readable where ``bench`` plans the grid.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder not found: {root} (dataset.root / --data-root; a run's identity "
            "comes from its dataset's content, so the folder must be readable where bench runs)"
        )
    key = cache_key(root)
    path = _cache_file(cache_dir, root)
    cached = _read_cache(path)
    if cached.get("root") == str(root) and cached.get("key") == key:
        fingerprint = str(cached["fingerprint"])
    else:
        fingerprint, count = compute_fingerprint(root)
        _write_cache(path, {"root": str(root), "key": key, "fingerprint": fingerprint,
                            "files": count})  # fmt: skip
    return fingerprint


class ContentPins:
    """Pins dataset contents into the run configs of one plan, looking at each dataset folder
    once (a grid of many runs shares one folder, which may hold ~400k files)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str] = {}

    def pin(self, config: dict[str, Any]) -> dict[str, Any]:
        """Write the fingerprint of ``dataset.root`` into ``dataset.content``: a run's identity
        then holds it instead of the path (:func:`harness.spec.config_hash`). A config without
        a root (synthfer generated into the cache: its generator settings identify its
        content) is returned unchanged."""
        from harness.data.datasets import cache_dir  # heavy imports; only for a real root

        root = config["dataset"].get("root")
        if root:
            cache = cache_dir(config["data"])
            if (str(root), str(cache)) not in self._seen:
                self._seen[(str(root), str(cache))] = dataset_fingerprint(root, cache)
            config["dataset"]["content"] = self._seen[(str(root), str(cache))]
        return config
