"""Fashion-MNIST (Xiao et al. 2017): 28×28 grey images of clothing, 10 classes, 60,000 / 10,000."""
from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..models import fashion_mnist_cnn
from .base import DataConfig, DatasetSpec, PreparedArrays
from .raw import RawFile, RawSource, raw_paths
from .splits import cap_splits, stratified_split

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist installs it

FILES = (
    RawFile("train-images-idx3-ubyte.gz", URL + "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    RawFile("train-labels-idx1-ubyte.gz", URL + "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    RawFile("t10k-images-idx3-ubyte.gz", URL + "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    RawFile("t10k-labels-idx1-ubyte.gz", URL + "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)


def offline_copy(workdir: Path) -> tuple[Path, str] | str:
    """(folder holding the files, description), or why there is no offline copy."""
    if all((SYSTEM_DIR / f.name).exists() for f in FILES):
        return SYSTEM_DIR, f"Debian package dataset-fashion-mnist ({SYSTEM_DIR})"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return f"no {SYSTEM_DIR} and no apt-get/dpkg to fetch the Debian package"
    # `apt-get download` fetches the .deb into the cwd without installing; `dpkg -x` unpacks it.
    ok = subprocess.run(["apt-get", "download", "-q", "dataset-fashion-mnist"], cwd=workdir,
                        capture_output=True, text=True)
    debs = list(workdir.glob("dataset-fashion-mnist_*.deb"))
    if ok.returncode != 0 or not debs:
        return (f"`apt-get download dataset-fashion-mnist` failed ({ok.stderr.strip()[-300:]}); "
                f"`apt-get update` may be needed first")
    subprocess.run(["dpkg", "-x", str(debs[0]), str(workdir / "x")], check=True)
    return workdir / "x" / SYSTEM_DIR.relative_to("/"), "apt-get download dataset-fashion-mnist + dpkg -x"


RAW = RawSource(
    "fashion_mnist", FILES, offline_copy,
    how_to_obtain=("delete the bad file and run `python -m cgt data --dataset fashion_mnist`, which takes it from "
                   f"{SYSTEM_DIR} (Debian package dataset-fashion-mnist), from `apt-get download "
                   f"dataset-fashion-mnist`, or from {URL}"),
)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (the MNIST format: big-endian header, then uint8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def prepare(cfg: DataConfig, options: object) -> PreparedArrays:
    paths = raw_paths(RAW, cfg.data_dir)
    x_trainval = read_idx(paths["train-images-idx3-ubyte.gz"])
    y_trainval = read_idx(paths["train-labels-idx1-ubyte.gz"]).astype(np.int64)
    x_test = read_idx(paths["t10k-images-idx3-ubyte.gz"])
    y_test = read_idx(paths["t10k-labels-idx1-ubyte.gz"]).astype(np.int64)
    # The standard 60k/10k split; validation is carved from the 60k, stratified, with a fixed seed.
    idx = stratified_split(y_trainval, {"val": cfg.val_fraction}, cfg.seed, rest="train")
    x = {"train": x_trainval[idx["train"]], "val": x_trainval[idx["val"]], "test": x_test}
    y = {"train": y_trainval[idx["train"]], "val": y_trainval[idx["val"]], "test": y_test}
    x, y = cap_splits(x, y, cfg.max_train, cfg.max_eval, cfg.seed)
    # Scale to [0, 1] then standardise with the *training* mean/std (no statistics from test).
    mean, std = (x["train"] / 255.0).mean(), (x["train"] / 255.0).std()
    x = {s: ((v / 255.0 - mean) / std).astype(np.float32)[:, None] for s, v in x.items()}
    return {"x": x, "y": y, "class_names": CLASSES,
            "extras": {"pixel_mean": np.float32(mean), "pixel_std": np.float32(std)}}


SPEC = DatasetSpec(
    name="fashion_mnist",
    description="Fashion-MNIST: 28×28 grey clothing images, 10 classes (standard 60k/10k split, val carved from train)",
    prepare=prepare,
    build_model=lambda input_shape, num_classes: fashion_mnist_cnn(num_classes, in_channels=input_shape[0]),
    raw=RAW,
)
