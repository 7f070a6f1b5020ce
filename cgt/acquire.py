"""Get the raw data files and prove they are the real ones.

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
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import atomic_path, sha256_bytes

SOURCES = ("local", "offline", "download")
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
TENSORLY_WHEEL = "tensorly==0.10.0"


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
    """sha256 of the content (see `content_digest`), from the project's PAPER.md §6."""
    array_key: str | None = None
    """For .mat/.npy files: the array's key in the .mat file; None for gzipped idx files."""
    dtype: str | None = None
    """For arrays: the dtype the checksum is computed in (`np.ascontiguousarray(x, dtype)`)."""


FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IP_URL = "https://www.ehu.eus/ccwintco/uploads/"

DATASET_FILES: dict[str, tuple[RawFile, ...]] = {
    "fashion_mnist": (
        RawFile("train-images-idx3-ubyte.gz", FMNIST_URL + "train-images-idx3-ubyte.gz",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        RawFile("train-labels-idx1-ubyte.gz", FMNIST_URL + "train-labels-idx1-ubyte.gz",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        RawFile("t10k-images-idx3-ubyte.gz", FMNIST_URL + "t10k-images-idx3-ubyte.gz",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        RawFile("t10k-labels-idx1-ubyte.gz", FMNIST_URL + "t10k-labels-idx1-ubyte.gz",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
    "indian_pines": (
        RawFile("Indian_pines_corrected.mat", IP_URL + "6/67/Indian_pines_corrected.mat",
                "36468dd7336c8bd37a80cced54362ea426f226703f3797ba494556fd8134e77f",
                array_key="indian_pines_corrected", dtype="<u2"),
        RawFile("Indian_pines_gt.mat", IP_URL + "c/c4/Indian_pines_gt.mat",
                "ebf20cfe0bce98f01885f0ab4fd1857925db3ef0a1f1624bbee3ffcb92425103",
                array_key="indian_pines_gt", dtype="u1"),
    ),
}

HOW_TO_OBTAIN = {
    "fashion_mnist": (
        "delete the bad file and run `python -m cgt data --dataset fashion_mnist`, which takes it from "
        f"{FASHION_MNIST_SYSTEM_DIR} (Debian package dataset-fashion-mnist), from `apt-get download "
        f"dataset-fashion-mnist`, or from {FMNIST_URL}"
    ),
    "indian_pines": (
        "delete the bad file and run `python -m cgt data --dataset indian_pines`, which takes the arrays "
        f"from the tensorly wheel ({TENSORLY_WHEEL}) or downloads the .mat files from {IP_URL} "
        "(GIC hyperspectral scenes page, University of the Basque Country)"
    ),
}


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


def verify(path: Path, spec: RawFile, dataset: str) -> None:
    """Raise DataVerificationError naming the file, expected and actual checksum, and the fix."""
    try:
        actual = content_digest(path, spec)
    except Exception as exc:  # truncated gzip, corrupt .mat, ... : all mean "not the real file"
        actual = f"unreadable ({type(exc).__name__}: {exc})"
    if actual != spec.content_sha256:
        raise DataVerificationError(
            f"{path} failed verification: expected content sha256 {spec.content_sha256}, got {actual}. "
            f"This file is not used. To obtain a good copy: {HOW_TO_OBTAIN[dataset]}."
        )


# ---------------------------------------------------------------- where copies can come from
def _candidates_local(dataset_dir: Path, spec: RawFile) -> list[Path]:
    """A dataset's file in the data dir; arrays may also be stored as .npy (what tensorly ships)."""
    paths = [dataset_dir / spec.name]
    if spec.array_key is not None:
        paths.append((dataset_dir / spec.name).with_suffix(".npy"))
    return [p for p in paths if p.exists()]


def _offline_fashion_mnist(workdir: Path) -> tuple[Path, str] | str:
    """(folder holding the files, description), or why there is no offline copy."""
    if all((FASHION_MNIST_SYSTEM_DIR / f.name).exists() for f in DATASET_FILES["fashion_mnist"]):
        return FASHION_MNIST_SYSTEM_DIR, f"Debian package dataset-fashion-mnist ({FASHION_MNIST_SYSTEM_DIR})"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return f"no {FASHION_MNIST_SYSTEM_DIR} and no apt-get/dpkg to fetch the Debian package"
    # `apt-get download` fetches the .deb into the cwd without installing; `dpkg -x` unpacks it.
    ok = subprocess.run(["apt-get", "download", "-q", "dataset-fashion-mnist"], cwd=workdir,
                        capture_output=True, text=True)
    debs = list(workdir.glob("dataset-fashion-mnist_*.deb"))
    if ok.returncode != 0 or not debs:
        return (f"`apt-get download dataset-fashion-mnist` failed ({ok.stderr.strip()[-300:]}); "
                f"`apt-get update` may be needed first")
    subprocess.run(["dpkg", "-x", str(debs[0]), str(workdir / "x")], check=True)
    return workdir / "x" / FASHION_MNIST_SYSTEM_DIR.relative_to("/"), "apt-get download dataset-fashion-mnist + dpkg -x"


def _offline_indian_pines(workdir: Path) -> tuple[Path, str] | str:
    """(folder holding the arrays, description), or why there is no offline copy."""
    spec = importlib.util.find_spec("tensorly")
    if spec is not None and spec.origin:
        data = Path(spec.origin).parent / "datasets" / "data"
        if (data / "Indian_pines_gt.npy").exists():
            return data, f"arrays shipped in the installed tensorly package ({data})"
    # Not installed: fetch the wheel from the package registry and read the arrays out of it.
    ok = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                         TENSORLY_WHEEL, "-d", str(workdir)], capture_output=True, text=True)
    wheels = list(workdir.glob("tensorly-*.whl"))
    if ok.returncode != 0 or not wheels:
        return f"tensorly is not installed and `pip download {TENSORLY_WHEEL}` failed ({ok.stderr.strip()[-300:]})"
    out = workdir / "x"
    with zipfile.ZipFile(wheels[0]) as whl:
        for member in whl.namelist():
            if member.endswith(("Indian_pines_corrected.npy", "Indian_pines_gt.npy")):
                (out / Path(member).name).parent.mkdir(parents=True, exist_ok=True)
                (out / Path(member).name).write_bytes(whl.read(member))
    return out, f"arrays inside the {TENSORLY_WHEEL} wheel (pip download)"


OFFLINE = {"fashion_mnist": _offline_fashion_mnist, "indian_pines": _offline_indian_pines}


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream `url` into `dest` atomically: an interrupted or short transfer leaves nothing behind."""
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            expected = resp.headers.get("Content-Length")
            shutil.copyfileobj(resp, out)
        if expected is not None and tmp.stat().st_size != int(expected):
            raise DataVerificationError(f"{url}: short download ({tmp.stat().st_size} of {expected} bytes)")


# ---------------------------------------------------------------- the public entry point
def acquire(dataset: str, data_dir: str | Path = "data/raw", sources: tuple[str, ...] = SOURCES,
            mirror: str | None = None) -> str:
    """Make every raw file of `dataset` present and verified under data_dir/dataset.

    Returns a one-line description of the source used. `mirror` replaces the directory part of
    the canonical URLs (tests serve the files from 127.0.0.1).
    """
    if dataset not in DATASET_FILES:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: {sorted(DATASET_FILES)}")
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise ValueError(f"unknown data source(s) {bad}; valid choices: {list(SOURCES)}")
    dataset_dir = Path(data_dir) / dataset
    specs = DATASET_FILES[dataset]
    errors: list[str] = []

    if "local" in sources and all(_candidates_local(dataset_dir, s) for s in specs):
        try:
            for spec in specs:
                verify(_candidates_local(dataset_dir, spec)[0], spec, dataset)
            return f"local files in {dataset_dir}"
        except DataVerificationError:
            raise  # a corrupt local file is the user's to see, never silently replaced

    if "offline" in sources:
        with tempfile.TemporaryDirectory() as work:
            found = OFFLINE[dataset](Path(work))
            if isinstance(found, str):
                errors.append(f"offline: {found}")
            else:
                src_dir, label = found
                try:
                    _copy_verified(src_dir, dataset_dir, specs, dataset)
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
                    verify(dest, spec, dataset)
                except DataVerificationError:
                    dest.unlink()  # never leave a bad download where a later run would find it
                    raise
            return f"downloaded from {mirror or spec.url.rsplit('/', 1)[0]}"
        except (urllib.error.URLError, OSError, DataVerificationError) as exc:
            errors.append(f"download: {exc}")

    raise DataVerificationError(f"could not obtain verified {dataset} files from sources {list(sources)}:\n  - "
                                + "\n  - ".join(errors))


def _copy_verified(src_dir: Path, dataset_dir: Path, specs: tuple[RawFile, ...], dataset: str) -> None:
    """Verify each file in src_dir (accepting a .npy copy of an array) and copy it in atomically."""
    for spec in specs:
        candidates = [src_dir / spec.name, (src_dir / spec.name).with_suffix(".npy")]
        src = next((p for p in candidates if p.exists()), None)
        if src is None:
            raise DataVerificationError(f"{src_dir} has no {spec.name}")
        verify(src, spec, dataset)
        with atomic_path(dataset_dir / src.name) as tmp:
            shutil.copyfile(src, tmp)


def raw_paths(dataset: str, data_dir: str | Path) -> dict[str, Path]:
    """Paths of the verified raw files (call `acquire` first), keyed by their canonical name."""
    dataset_dir = Path(data_dir) / dataset
    out = {}
    for spec in DATASET_FILES[dataset]:
        found = _candidates_local(dataset_dir, spec)
        if not found:
            raise FileNotFoundError(f"{dataset_dir / spec.name} is missing; run `python -m cgt data --dataset {dataset}`")
        out[spec.name] = found[0]
    return out
