"""Splits (cgt/data/splits.py) and dataset preparation (cgt/data/) on the real, verified data.

Preparation runs with small settings (few PCA components, small patches, capped Fashion-MNIST) to
stay fast. Missing raw data is fetched through `acquire` by the session fixture, never skipped.
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cgt.data import BUILTIN, DataConfig, indian_pines, load, prepared
from cgt.data.base import COMMON_FIELDS
from cgt.data.indian_pines import IndianPinesOptions, extract_patches, fit_spectral_pca, load_raw
from cgt.data.prepared import cache_path
from cgt.data.splits import guarded_spatial_split, missing_classes, stratified_split, stratified_subsample

REPO = Path(__file__).resolve().parents[1]
FRACTIONS = {"train": 0.2, "val": 0.1}
IP_COUNTS = [46, 1428, 830, 237, 483, 730, 28, 478, 20, 972, 2455, 593, 205, 1265, 386, 93]  # the scene's published class counts (Baumgardner et al. 2015)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def ip_raw(raw_dir):
    """The real Indian Pines cube and ground truth."""
    return load_raw(raw_dir)


@pytest.fixture(scope="session")
def ip_labels(ip_raw) -> np.ndarray:
    """Labels (1..16) of the 10,249 labelled Indian Pines pixels."""
    gt = ip_raw[1].ravel()
    return gt[gt > 0]


def config(**kw) -> DataConfig:
    """A DataConfig from flat keywords: common fields as fields, the rest as the dataset's options."""
    return DataConfig(**{k: v for k, v in kw.items() if k in COMMON_FIELDS},
                      options={k: v for k, v in kw.items() if k not in COMMON_FIELDS})


def ip_config(raw_dir: Path, cache_dir: Path, **kw) -> DataConfig:
    """A small, fast Indian Pines configuration."""
    return config(**{"dataset": "indian_pines", "data_dir": str(raw_dir), "cache_dir": str(cache_dir),
                     "pca_components": 5, "patch_size": 5} | kw)


def ip_options(cfg: DataConfig) -> IndianPinesOptions:
    return BUILTIN["indian_pines"].resolve_options(cfg)


@pytest.fixture
def count_preparations(monkeypatch):
    """Replace every built-in dataset's `prepare` by a wrapper recording (dataset, options) per call."""
    calls = []
    for name, spec in BUILTIN.items():
        def counted(cfg, opts, _name=name, _prepare=spec.prepare):
            calls.append((_name, opts))
            return _prepare(cfg, opts)
        monkeypatch.setitem(BUILTIN, name, dataclasses.replace(spec, prepare=counted))
    return calls


def refuse(*_args, **_kw):
    raise AssertionError("work started although it should not have")


@pytest.fixture
def no_work(monkeypatch):
    """Any acquisition or preparation fails the test."""
    monkeypatch.setattr(prepared, "obtain", refuse)
    for name, spec in list(BUILTIN.items()):
        monkeypatch.setitem(BUILTIN, name, dataclasses.replace(spec, prepare=refuse))


@pytest.fixture(scope="module")
def ip_prepared(raw_dir, tmp_path_factory):
    """Indian Pines prepared with the random split, 5 PCA components, 5×5 patches."""
    return load(ip_config(raw_dir, tmp_path_factory.mktemp("cache")))


def assert_partition(splits: dict[str, np.ndarray], universe: np.ndarray):
    """The splits are pairwise disjoint and together are exactly `universe`."""
    allidx = np.concatenate(list(splits.values()))
    assert len(allidx) == len(np.unique(allidx)), "splits overlap"
    assert np.array_equal(np.sort(allidx), np.sort(universe))


# ---------------------------------------------------------------- 4. splits
def test_stratified_split_is_a_partition():
    """stratified_split's splits are disjoint and cover every index."""
    labels = np.random.default_rng(1).integers(0, 5, size=1000)
    idx = stratified_split(labels, FRACTIONS, seed=0)
    assert set(idx) == {"train", "val", "test"}
    assert_partition(idx, np.arange(len(labels)))


def test_stratified_split_is_seeded():
    """The same seed gives the same split; another seed a different one."""
    labels = np.random.default_rng(1).integers(0, 5, size=1000)
    a, b, c = (stratified_split(labels, FRACTIONS, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_stratified_split_keeps_class_fractions_on_real_indian_pines(ip_labels):
    """On the real labels every class (even Oats, 20 px) is in every split, at its fraction within rounding."""
    assert np.array_equal(np.bincount(ip_labels)[1:], IP_COUNTS)
    idx = stratified_split(ip_labels, FRACTIONS, seed=0)
    assert_partition(idx, np.arange(len(ip_labels)))
    for c, n_c in zip(range(1, 17), IP_COUNTS):
        got = {s: int(np.sum(ip_labels[i] == c)) for s, i in idx.items()}
        for s, f in FRACTIONS.items():
            assert abs(got[s] - f * n_c) <= 0.5, (c, s, got)
        assert got["test"] >= 1 and sum(got.values()) == n_c
    assert missing_classes(ip_labels, idx) == {}


def test_stratified_split_rejects_a_class_too_small():
    """A class with too few samples for one per split raises ValueError naming that class."""
    labels = np.array([0] * 50 + [7] * 2 + [3] * 50)
    with pytest.raises(ValueError, match=r"class 7 has only 2 samples"):
        stratified_split(labels, FRACTIONS, seed=0)


def test_missing_classes_reports_absent_classes():
    """missing_classes names, per split, exactly the classes that split lacks."""
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert missing_classes(labels, {"a": np.array([0, 2, 4]), "b": np.array([1, 3])}) == {"b": [2]}


def test_stratified_subsample_keeps_proportions(ip_labels):
    """stratified_subsample returns n distinct indices, each class within one sample of its share."""
    train = ip_labels[stratified_split(ip_labels, FRACTIONS, seed=0)["train"]]
    for n in (600, 100, 37):
        keep = stratified_subsample(train, n, seed=0)
        assert len(keep) == n and len(np.unique(keep)) == n and np.all(np.diff(keep) > 0)
        got = np.bincount(train[keep], minlength=17)[1:]
        assert np.all(got >= 1)
        if n >= 100:  # below that, the at-least-one floor of rare classes outweighs their share
            share = n * np.bincount(train, minlength=17)[1:] / len(train)
            assert np.all(np.abs(got - share) < 1), (got, share)
    assert np.array_equal(stratified_subsample(train, len(train) + 5, seed=0), np.arange(len(train)))
    few = stratified_subsample(train, 5, seed=0)  # fewer than the 16 classes: one of each
    assert np.array_equal(np.bincount(train[few], minlength=17)[1:], np.ones(16))


# ---------------------------------------------------------------- 5. preparation
def test_indian_pines_shapes_dtypes_labels(ip_prepared, ip_raw):
    """Prepared Indian Pines: (N, 5, 5, 5) float32 patches, int64 labels 0..15 matching the ground truth."""
    d = ip_prepared
    gt = ip_raw[1].ravel()
    assert d.class_names == indian_pines.CLASSES and d.num_classes == 16
    assert d.input_shape == (5, 5, 5)
    total = 0
    for s in ("train", "val", "test"):
        assert d.x[s].dtype == torch.float32 and d.y[s].dtype == torch.int64
        assert d.x[s].shape[0] == d.y[s].shape[0]
        y = d.y[s].numpy()
        assert y.min() == 0 and y.max() == 15 and len(np.unique(y)) == 16
        assert np.array_equal(gt[d.extras[f"pixels_{s}"]].astype(np.int64) - 1, y)
        total += len(y)
    assert total == sum(IP_COUNTS)
    assert len(d.y["train"]) == sum(max(1, round(0.2 * n)) for n in IP_COUNTS)
    assert ast.literal_eval(str(d.extras["missing_classes"])) == {}
    assert np.isfinite(d.x["train"].numpy()).all()


def test_fashion_mnist_with_caps(raw_dir, tmp_path):
    """Capped Fashion-MNIST: (N, 1, 28, 28) float32 standardised on train, labels 0..9, caps obeyed."""
    d = load(DataConfig(dataset="fashion_mnist", data_dir=str(raw_dir), cache_dir=str(tmp_path),
                        max_train=500, max_eval=200))
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert {s: len(d.y[s]) for s in d.y} == {"train": 500, "val": 200, "test": 200}
    for s in d.x:
        assert d.x[s].dtype == torch.float32 and d.y[s].dtype == torch.int64
        assert np.array_equal(np.bincount(d.y[s].numpy(), minlength=10) > 0, np.ones(10, bool))
    x = d.x["train"].numpy()
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3  # train statistics, not test's
    assert d.counts()["train"].tolist() == [50] * 10  # the 54k train part is balanced


def test_pca_is_fitted_on_training_pixels_only(ip_raw):
    """Perturbing non-training pixels changes neither the PCA nor the training pixels' features."""
    cube, gt = ip_raw
    labelled = np.flatnonzero(gt.ravel() > 0)
    train = labelled[stratified_split(gt.ravel()[labelled], FRACTIONS, seed=0)["train"]]
    image, pca = fit_spectral_pca(cube, train, 5, seed=0)

    others = np.ones(gt.size, bool)
    others[train] = False
    perturbed = cube.reshape(-1, cube.shape[2]).astype(np.int64)
    perturbed[others] = perturbed[others] * 3 + np.random.default_rng(0).integers(0, 500, perturbed[others].shape)
    image2, pca2 = fit_spectral_pca(perturbed.reshape(cube.shape), train, 5, seed=0)
    np.testing.assert_allclose(pca2.components_, pca.components_, rtol=1e-10, atol=1e-10)
    flat, flat2 = image.reshape(-1, 5), image2.reshape(-1, 5)
    np.testing.assert_allclose(flat2[train], flat[train], rtol=1e-5, atol=1e-5)
    assert not np.allclose(flat2[others], flat[others])

    # Control: touching training pixels does change the fit, so the check above can fail.
    touched = cube.reshape(-1, cube.shape[2]).astype(np.int64)
    touched[train[:50]] *= 3
    _, pca3 = fit_spectral_pca(touched.reshape(cube.shape), train, 5, seed=0)
    assert not np.allclose(pca3.components_, pca.components_, atol=1e-3)


def test_prepared_training_features_ignore_test_pixels(raw_dir, ip_raw, tmp_path, monkeypatch):
    """Through indian_pines.prepare: a cube altered off the training pixels leaves training centres unchanged."""
    cube, gt = ip_raw
    cfg = ip_config(raw_dir, tmp_path)
    ref = indian_pines.prepare(cfg, ip_options(cfg))
    train = ref["extras"]["pixels_train"]
    flat = cube.reshape(-1, cube.shape[2]).astype(np.int64)
    off = np.ones(gt.size, bool)
    off[train] = False
    flat[off] = flat[off][::-1]  # shuffle every non-training pixel's spectrum
    monkeypatch.setattr(indian_pines, "load_raw", lambda _: (flat.reshape(cube.shape), gt))
    new = indian_pines.prepare(cfg, ip_options(cfg))
    r = ip_options(cfg).patch_size // 2
    np.testing.assert_allclose(new["x"]["train"][:, :, r, r], ref["x"]["train"][:, :, r, r], rtol=1e-5, atol=1e-5)
    assert not np.allclose(new["x"]["test"][:, :, r, r], ref["x"]["test"][:, :, r, r])


def _reflect(i: int, n: int) -> int:
    """numpy's 'reflect' padding index (edge not repeated), written out by hand."""
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


@pytest.mark.parametrize("size", [1, 3, 5])
def test_extract_patches_matches_naive_reference(size):
    """extract_patches equals a per-pixel loop with hand-written reflect padding, border pixels included."""
    rng = np.random.default_rng(size)
    image = rng.normal(size=(7, 9, 4)).astype(np.float32)
    rows, cols = np.divmod(np.arange(7 * 9), 9)  # every pixel: corners and edges too
    got = extract_patches(image, rows, cols, size)
    assert got.shape == (len(rows), 4, size, size) and got.dtype == np.float32
    r = size // 2
    for k, (i, j) in enumerate(zip(rows, cols)):
        expected = np.empty((4, size, size), np.float32)
        for a in range(size):
            for b in range(size):
                expected[:, a, b] = image[_reflect(i + a - r, 7), _reflect(j + b - r, 9)]
        np.testing.assert_array_equal(got[k], expected)
    padded = np.pad(image, ((r, r), (r, r), (0, 0)), mode="reflect")  # and the np.pad formulation
    for k in (0, 8, 31, 62):
        i, j = rows[k], cols[k]
        np.testing.assert_array_equal(got[k], padded[i:i + size, j:j + size].transpose(2, 0, 1))


def test_cache_is_reused_keyed_and_robust(raw_dir, tmp_path, monkeypatch, count_preparations, capsys):
    """A second load reads the cache; a changed parameter re-prepares into a new file; a truncated cache is
    redone, with a notice on stderr."""
    calls = count_preparations
    patch_sizes = lambda: [opts.patch_size for _, opts in calls]  # noqa: E731
    cfg = ip_config(raw_dir, tmp_path)
    first = load(cfg)
    assert patch_sizes() == [5] and cache_path(cfg).exists()

    with monkeypatch.context() as m:
        m.setitem(BUILTIN, "indian_pines", dataclasses.replace(BUILTIN["indian_pines"], prepare=refuse))
        m.setattr(prepared, "obtain", refuse)
        second = load(cfg)
    assert second.checksum == first.checksum
    assert all(np.array_equal(second.x[s].numpy(), first.x[s].numpy()) for s in first.x)

    other = ip_config(raw_dir, tmp_path, patch_size=3)
    assert cache_path(other) != cache_path(cfg)
    third = load(other)
    assert patch_sizes() == [5, 3] and third.input_shape == (5, 3, 3)
    assert cache_path(cfg).exists() and cache_path(other).exists()

    blob = cache_path(cfg).read_bytes()
    cache_path(cfg).write_bytes(blob[: len(blob) // 2])
    capsys.readouterr()
    fourth = load(cfg)
    assert f"{cache_path(cfg)}: unreadable prepared arrays" in capsys.readouterr().err
    assert patch_sizes() == [5, 3, 5] and fourth.checksum == first.checksum
    assert cache_path(cfg).read_bytes() == blob  # rewritten whole

    # Options of another dataset are refused, not silently ignored; common fields key the cache.
    fm = DataConfig(dataset="fashion_mnist", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown data option\(s\) \['patch_size'\] for dataset 'fashion_mnist'"):
        cache_path(config(dataset="fashion_mnist", cache_dir=str(tmp_path), patch_size=7))
    assert cache_path(fm) != cache_path(DataConfig(dataset="fashion_mnist", cache_dir=str(tmp_path), max_train=9))


def test_a_named_data_folder_is_verified_even_when_its_prepared_arrays_are_cached(raw_dir, tmp_path):
    """verify_raw (a `--data-dir` given by the user): a raw file corrupted after the cache was built is
    refused on the next load, by name, with a repair hint naming the folder; without verify_raw the
    cache alone is read (the default data folder is verified whenever the cache is built)."""
    import shutil

    from cgt.data import DataVerificationError

    folder = tmp_path / "raw"
    shutil.copytree(raw_dir / "indian_pines", folder / "indian_pines")
    cfg = ip_config(folder, tmp_path / "prepared")
    first = load(cfg, verify_raw=True)
    target = folder / "indian_pines" / "Indian_pines_gt.npy"
    blob = bytearray(target.read_bytes())
    blob[-10] ^= 0xFF
    target.write_bytes(bytes(blob))
    assert load(cfg).checksum == first.checksum  # the cache, as before
    with pytest.raises(DataVerificationError) as info:
        load(cfg, verify_raw=True)
    message = str(info.value)
    assert f"{target} failed verification" in message and f"add `--data-dir {folder}` to that command" in message


def test_spatial_split_option_reports_missing_classes(raw_dir, tmp_path):
    """split='spatial': extras hold the split map, and list exactly the classes each split lacks."""
    d = load(ip_config(raw_dir, tmp_path, split="spatial"))
    split_map = d.extras["split_map"]
    for code, s in enumerate(("train", "val", "test"), start=1):
        np.testing.assert_array_equal(np.flatnonzero(split_map.ravel() == code), d.extras[f"pixels_{s}"])
    reported = ast.literal_eval(str(d.extras["missing_classes"]))
    expected = {s: sorted(set(range(16)) - set(np.unique(d.y[s].numpy()).tolist())) for s in d.y}
    assert reported == {s: v for s, v in expected.items() if v}
    assert "train" not in reported  # every class trains


# ---------------------------------------------------------------- 6. invalid arguments
@pytest.mark.parametrize("kwargs,match", [
    ({"dataset": "mnist"}, r"unknown dataset 'mnist'; valid choices: \['fashion_mnist', 'indian_pines'\]"),
    ({"dataset": "indian_pines", "patch_size": 4}, r"patch_size=4 must be a positive odd number"),
    ({"dataset": "indian_pines", "pca_components": 201}, r"pca_components=201 must be between 1 and the 200 bands"),
    ({"dataset": "indian_pines", "patch": 5}, r"unknown data option\(s\) \['patch'\] for dataset 'indian_pines'; "
                                             r"its options are \['train_fraction', 'split', 'pca_components'"),
    ({"dataset": "indian_pines", "train_fraction": 0.7, "val_fraction": 0.3},
     r"sum to 1\.000; they must sum to < 1"),
    ({"dataset": "indian_pines", "train_fraction": 0.8, "val_fraction": 0.5}, r"they must sum to < 1"),
    ({"val_fraction": 1.2}, r"val=1\.2 must be in \(0, 1\)"),
    ({"val_fraction": 0.0}, r"val=0\.0 must be in \(0, 1\)"),
    ({"dataset": "indian_pines", "train_fraction": -0.1}, r"train=-0\.1 must be in \(0, 1\)"),
    ({"dataset": "indian_pines", "split": "checkerboard"},
     r"unknown split 'checkerboard'; valid choices: \['random', 'spatial', 'blocked'\]"),
    ({"max_train": 0}, r"max_train=0 must be a positive number of samples or None"),
])
def test_invalid_config_raises_before_any_work(kwargs, match, tmp_path, no_work):
    """load() rejects a bad DataConfig with a clear ValueError before acquiring, preparing or caching."""
    with pytest.raises(ValueError, match=match):
        load(config(**{"cache_dir": str(tmp_path / "cache")} | kwargs))
    assert not (tmp_path / "cache").exists()


def test_split_functions_validate_fractions():
    """The split functions themselves reject fractions outside (0, 1) or summing to >= 1."""
    labels = np.repeat(np.arange(3), 20)
    with pytest.raises(ValueError, match=r"sum to 1\.100"):
        stratified_split(labels, {"train": 0.6, "val": 0.5}, seed=0)
    with pytest.raises(ValueError, match=r"train=1\.5 must be in \(0, 1\)"):
        stratified_split(labels, {"train": 1.5}, seed=0)
    with pytest.raises(ValueError, match=r"train=0\.0 must be in \(0, 1\)"):
        guarded_spatial_split(np.ones((10, 10), int), {"train": 0.0, "val": 0.1}, seed=0, radius=1)
