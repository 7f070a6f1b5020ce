"""Get a dataset's raw files and prove they are the real ones (the datasets' own modules say which files).

For each dataset the sources are tried in order, stopping at the first that yields verified files:
  1. `local`    files already in the data directory;
  2. `offline`  copies that package registries ship (Debian's dataset-fashion-mnist package,
                the arrays inside the tensorly wheel), so a machine without internet works;
  3. `download` the canonical URLs, written atomically and verified.
A file is verified by the sha256 of its *content* (decompressed idx bytes, or the array bytes),
because gzip headers and .mat/.npy containers differ between copies of the same data.
"""
from __future__ import annotations

import gzip
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, sha256_bytes
from ..notices import notice

SOURCES = ("local", "offline", "download")


class DataVerificationError(RuntimeError):
    """A data file exists but is not the real one (or could not be obtained at all)."""


@dataclass(frozen=True)
class RawFile:
    """One file of a dataset, as it is stored under <data-dir>/<dataset>/."""

    name: str
    """File name in the data directory."""
    url: str
    """Canonical download URL."""
    content_sha256: str
    """sha256 of the content (see `content_digest`), as data/README.md lists it."""
    array_key: str | None = None
    """For .mat/.npy files: the array's key in the .mat file; None for gzipped idx files."""
    dtype: str | None = None
    """For arrays: the dtype the checksum is computed in (`np.ascontiguousarray(x, dtype)`)."""


@dataclass(frozen=True)
class RawSource:
    """Everything `obtain` needs to know about one dataset's raw files."""

    dataset: str
    """Folder name under the data directory."""
    files: tuple[RawFile, ...]
    """The files, each with its content checksum."""
    offline: Callable[[Path], "tuple[Path, str] | str"]
    """offline(workdir) → (folder holding the files, description of the source), or why there is none."""
    how_to_obtain: str
    """What to tell a user whose file failed verification."""


# ---------------------------------------------------------------- content checksums
def load_array(path: Path, spec: RawFile) -> np.ndarray:
    """Load the array of a .npy or .mat copy of `spec`."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    from scipy.io import loadmat

    return loadmat(path)[spec.array_key]


def content_digest(path: Path, spec: RawFile) -> str:
    """sha256 of what the file holds, independent of its container; raises on unreadable files."""
    if spec.array_key is None:
        with gzip.open(path, "rb") as f:
            return sha256_bytes(f.read())
    return sha256_bytes(np.ascontiguousarray(load_array(path, spec), spec.dtype).tobytes())


def verify(path: Path, spec: RawFile, how_to_obtain: str) -> None:
    """Raise DataVerificationError naming the file, expected and actual checksum, and the fix."""
    try:
        actual = content_digest(path, spec)
    except Exception as exc:  # truncated gzip, corrupt .mat, ... : all mean "not the real file"
        actual = f"unreadable ({type(exc).__name__}: {exc})"
    if actual != spec.content_sha256:
        raise DataVerificationError(
            f"{path} failed verification: expected content sha256 {spec.content_sha256}, got {actual}. "
            f"This file is not used. To obtain a good copy: {how_to_obtain}."
        )


# ---------------------------------------------------------------- where copies can come from
def _candidates_local(dataset_dir: Path, spec: RawFile) -> list[Path]:
    """A dataset's file in the data dir; arrays may also be stored as .npy (what tensorly ships)."""
    paths = [dataset_dir / spec.name]
    if spec.array_key is not None:
        paths.append((dataset_dir / spec.name).with_suffix(".npy"))
    return [p for p in paths if p.exists()]


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream `url` into `dest` atomically: an interrupted or short transfer leaves nothing behind."""
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            expected = resp.headers.get("Content-Length")
            shutil.copyfileobj(resp, out)
        if expected is not None and tmp.stat().st_size != int(expected):
            raise DataVerificationError(f"{url}: short download ({tmp.stat().st_size} of {expected} bytes)")


# ---------------------------------------------------------------- the public entry point
def obtain(source: RawSource, data_dir: str | Path = "data/raw", sources: tuple[str, ...] = SOURCES,
           mirror: str | None = None, named_dir: bool = False) -> str:
    """Make every raw file of `source` present and verified under data_dir/<dataset>.

    Returns a one-line description of the source used. `mirror` replaces the directory part of
    the canonical URLs (tests serve the files from 127.0.0.1). named_dir: the user gave data_dir
    (`--data-dir`), so the repair hint of a failed file tells them to give it again.
    """
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise ValueError(f"unknown data source(s) {bad}; valid choices: {list(SOURCES)}")
    dataset_dir = Path(data_dir) / source.dataset
    specs = source.files
    errors: list[str] = []
    hint = repair_hint(source, data_dir if named_dir else None)

    if "local" in sources and all(_candidates_local(dataset_dir, s) for s in specs):
        for spec in specs:  # a corrupt local file is the user's to see, never silently replaced
            verify(_candidates_local(dataset_dir, spec)[0], spec, hint)
        return f"local files in {dataset_dir}"

    if "offline" in sources:
        with tempfile.TemporaryDirectory() as work:
            found = source.offline(Path(work))
            if isinstance(found, str):
                errors.append(f"offline: {found}")
            else:
                src_dir, label = found
                try:
                    _copy_verified(src_dir, dataset_dir, source, hint)
                    notice(f"{dataset_dir}: verified {source.dataset} files copied in from {label}")
                    return label
                except DataVerificationError as exc:
                    errors.append(str(exc))

    if "download" in sources:
        try:
            for spec in specs:
                url = spec.url if mirror is None else mirror.rstrip("/") + "/" + spec.name
                dest = dataset_dir / spec.name
                _download(url, dest)
                try:
                    verify(dest, spec, hint)
                except DataVerificationError:
                    dest.unlink()  # never leave a bad download where a later run would find it
                    notice(f"{dest}: downloaded copy failed verification; deleted")
                    raise
            return f"downloaded from {mirror or spec.url.rsplit('/', 1)[0]}"
        except (urllib.error.URLError, OSError, DataVerificationError) as exc:
            errors.append(f"download: {exc}")

    raise DataVerificationError(f"could not obtain verified {source.dataset} files from sources {list(sources)}:\n  - "
                                + "\n  - ".join(errors))


def repair_hint(source: RawSource, named_dir: str | Path | None) -> str:
    """What to do about a file that failed: the dataset's own advice, naming the data folder when the
    user gave one (the default folder's command would repair a different folder)."""
    if named_dir is None:
        return source.how_to_obtain
    return f"{source.how_to_obtain} — for this folder add `--data-dir {named_dir}` to that command"


def _copy_verified(src_dir: Path, dataset_dir: Path, source: RawSource, hint: str) -> None:
    """Verify each file in src_dir (accepting a .npy copy of an array) and copy it in atomically."""
    for spec in source.files:
        candidates = [src_dir / spec.name, (src_dir / spec.name).with_suffix(".npy")]
        src = next((p for p in candidates if p.exists()), None)
        if src is None:
            raise DataVerificationError(f"{src_dir} has no {spec.name}")
        verify(src, spec, hint)
        with atomic_path(dataset_dir / src.name) as tmp:
            shutil.copyfile(src, tmp)


def raw_paths(source: RawSource, data_dir: str | Path) -> dict[str, Path]:
    """Paths of the verified raw files (call `obtain` first), keyed by their canonical name."""
    dataset_dir = Path(data_dir) / source.dataset
    out = {}
    for spec in source.files:
        found = _candidates_local(dataset_dir, spec)
        if not found:
            raise FileNotFoundError(f"{dataset_dir / spec.name} is missing; run "
                                    f"`python -m cgt data --dataset {source.dataset}`")
        out[spec.name] = found[0]
    return out
