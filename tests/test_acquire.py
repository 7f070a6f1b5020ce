"""Raw data acquisition: content checksums, the download path (local HTTP server) and `python -m cgt data`.

Everything runs on the real, verified files. If they are missing, the session fixture fetches them
through `acquire` (offline sources first); if that fails the tests error loudly, they never skip.
"""
from __future__ import annotations

import functools
import gzip
import http.server
import re
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from cgt import cli
from cgt.data import BUILTIN, DataVerificationError, acquire
from cgt.data.raw import content_digest, verify
from cgt.fileio import sha256_bytes

REPO = Path(__file__).resolve().parents[1]
DATASET_FILES = {name: spec.raw.files for name, spec in BUILTIN.items()}
HOW_TO_OBTAIN = {name: spec.raw.how_to_obtain for name, spec in BUILTIN.items()}
FMNIST = DATASET_FILES["fashion_mnist"]
IP = DATASET_FILES["indian_pines"]
SPEC = {s.name: s for files in DATASET_FILES.values() for s in files}


# ---------------------------------------------------------------- fixtures and helpers

def real_file(raw_dir: Path, dataset: str, name: str) -> Path:
    """The stored copy of canonical file `name` (arrays are stored as the .npy tensorly ships, or .mat)."""
    base = raw_dir / dataset / name
    return base if base.exists() else base.with_suffix(".npy")


def flip_byte(data: bytes, pos: int) -> bytes:
    """`data` with the byte at `pos` inverted."""
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]


def npy_data_offset(path: Path) -> int:
    """Where the array bytes of a .npy file start (after the header)."""
    return np.load(path, mmap_mode="r").offset


def assert_names_everything(err: DataVerificationError, path: Path, expected: str, actual: str, dataset: str):
    """The error message names the file, both checksums and how to obtain a good copy."""
    msg = str(err)
    assert str(path) in msg
    assert expected in msg
    assert actual in msg
    assert HOW_TO_OBTAIN[dataset] in msg
    assert f"python -m cgt data --dataset {dataset}" in msg


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(handler) -> str:
    """Run an HTTP server on 127.0.0.1 in a thread; yield its base URL; stop it afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def bytes_handler(payload: dict[str, bytes], declared: dict[str, int] | None = None, requests: list | None = None):
    """A handler serving `payload[name]`, announcing `declared[name]` bytes, then closing the connection."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.lstrip("/")
            if requests is not None:
                requests.append(name)
            if name not in payload:
                self.send_error(404)
                return
            body = payload[name]
            self.send_response(200)
            self.send_header("Content-Length", str((declared or {}).get(name, len(body))))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture(scope="module")
def fmnist_served(raw_dir, tmp_path_factory) -> Path:
    """A folder holding copies of the real Fashion-MNIST .gz files, to be served over HTTP."""
    folder = tmp_path_factory.mktemp("mirror")
    for spec in FMNIST:
        shutil.copyfile(raw_dir / "fashion_mnist" / spec.name, folder / spec.name)
    return folder


def assert_left_empty(dataset_dir: Path):
    """No file at all (not even a hidden temp file) is left in the dataset folder."""
    left = sorted(p.name for p in dataset_dir.iterdir()) if dataset_dir.exists() else []
    assert left == []


# ---------------------------------------------------------------- 1. checksums
@pytest.mark.parametrize("dataset,name", [(d, s.name) for d, files in DATASET_FILES.items() for s in files])
def test_verify_accepts_the_real_files(raw_dir, dataset, name):
    """verify() passes on every stored real file (the .gz idx files and the Indian Pines arrays)."""
    path = real_file(raw_dir, dataset, name)
    verify(path, SPEC[name], HOW_TO_OBTAIN[dataset])
    assert content_digest(path, SPEC[name]) == SPEC[name].content_sha256


def test_verify_accepts_a_regzipped_copy_with_another_header(raw_dir, tmp_path):
    """Same content under a different gzip header (as Debian ships it) still verifies."""
    spec = SPEC["t10k-labels-idx1-ubyte.gz"]
    raw = (raw_dir / "fashion_mnist" / spec.name).read_bytes()
    copy = tmp_path / spec.name
    copy.write_bytes(gzip.compress(gzip.decompress(raw), compresslevel=1, mtime=12345))
    assert copy.read_bytes() != raw
    verify(copy, spec, HOW_TO_OBTAIN["fashion_mnist"])


@pytest.mark.parametrize("name", ["t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"])
def test_verify_rejects_one_flipped_byte_in_gz_content(raw_dir, tmp_path, name):
    """A valid gzip whose decompressed content differs by one byte is rejected, with a full message."""
    spec = SPEC[name]
    content = gzip.decompress((raw_dir / "fashion_mnist" / name).read_bytes())
    bad = flip_byte(content, len(content) // 2)
    copy = tmp_path / name
    copy.write_bytes(gzip.compress(bad))
    with pytest.raises(DataVerificationError) as info:
        verify(copy, spec, HOW_TO_OBTAIN["fashion_mnist"])
    assert_names_everything(info.value, copy, spec.content_sha256, sha256_bytes(bad), "fashion_mnist")


def test_verify_rejects_one_flipped_byte_in_raw_gz(raw_dir, tmp_path):
    """A .gz with one byte flipped in its compressed stream is rejected as unreadable, never used."""
    spec = SPEC["t10k-labels-idx1-ubyte.gz"]
    raw = (raw_dir / "fashion_mnist" / spec.name).read_bytes()
    copy = tmp_path / spec.name
    copy.write_bytes(flip_byte(raw, len(raw) // 2))
    with pytest.raises(DataVerificationError) as info:
        verify(copy, spec, HOW_TO_OBTAIN["fashion_mnist"])
    assert_names_everything(info.value, copy, spec.content_sha256, "unreadable", "fashion_mnist")


@pytest.mark.parametrize("name", [s.name for s in IP])
def test_verify_rejects_one_flipped_byte_in_npy_data(raw_dir, tmp_path, name):
    """An Indian Pines .npy with one flipped byte in its array data is rejected, with a full message."""
    spec = SPEC[name]
    src = real_file(raw_dir, "indian_pines", name)
    assert src.suffix == ".npy", "the stored Indian Pines arrays are expected as .npy (tensorly's copy)"
    raw = src.read_bytes()
    start = npy_data_offset(src)
    copy = tmp_path / src.name
    copy.write_bytes(flip_byte(raw, start + (len(raw) - start) // 2))
    actual = sha256_bytes(np.ascontiguousarray(np.load(copy), spec.dtype).tobytes())
    assert actual != spec.content_sha256
    with pytest.raises(DataVerificationError) as info:
        verify(copy, spec, HOW_TO_OBTAIN["indian_pines"])
    assert_names_everything(info.value, copy, spec.content_sha256, actual, "indian_pines")
    assert "tensorly" in str(info.value) and "ehu.eus" in str(info.value)


def test_verify_accepts_mat_files_and_rejects_a_changed_value(raw_dir, tmp_path):
    """.mat copies (the canonical container) verify by array content; one changed value is rejected."""
    from scipy.io import savemat

    for spec in IP:
        arr = np.load(real_file(raw_dir, "indian_pines", spec.name))
        good = tmp_path / spec.name
        savemat(good, {spec.array_key: arr})
        verify(good, spec, HOW_TO_OBTAIN["indian_pines"])
        arr = arr.copy()
        arr.flat[arr.size // 2] += 1
        bad = tmp_path / f"bad_{spec.name}"
        savemat(bad, {spec.array_key: arr})
        with pytest.raises(DataVerificationError, match="failed verification"):
            verify(bad, spec, HOW_TO_OBTAIN["indian_pines"])


def _copy_dataset(raw_dir: Path, dataset: str, dest: Path) -> Path:
    folder = dest / dataset
    folder.mkdir(parents=True)
    for spec in DATASET_FILES[dataset]:
        src = real_file(raw_dir, dataset, spec.name)
        shutil.copyfile(src, folder / src.name)
    return folder


@pytest.mark.parametrize("dataset,name", [("fashion_mnist", "t10k-labels-idx1-ubyte.gz"),
                                          ("indian_pines", "Indian_pines_gt.npy")])
def test_acquire_local_refuses_a_corrupt_file(raw_dir, tmp_path, dataset, name):
    """acquire(sources=('local',)) raises on a corrupt local file and leaves it as it is."""
    folder = _copy_dataset(raw_dir, dataset, tmp_path)
    target = folder / name
    raw = target.read_bytes()
    target.write_bytes(flip_byte(raw, len(raw) - 10))  # inside the gzip stream / the array data
    corrupt = target.read_bytes()
    with pytest.raises(DataVerificationError, match=re.escape(str(target))):
        acquire(dataset, tmp_path, sources=("local",))
    assert target.read_bytes() == corrupt


def test_acquire_never_silently_replaces_a_corrupt_local_file(raw_dir, tmp_path, fmnist_served):
    """With a working mirror available, a corrupt local file still raises and nothing is downloaded."""
    folder = _copy_dataset(raw_dir, "fashion_mnist", tmp_path / "data")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(flip_byte(target.read_bytes(), 100))
    requests: list[str] = []
    payload = {s.name: (fmnist_served / s.name).read_bytes() for s in FMNIST}
    with serve(bytes_handler(payload, requests=requests)) as url:
        with pytest.raises(DataVerificationError, match="t10k-labels"):
            acquire("fashion_mnist", tmp_path / "data", sources=("local", "download"), mirror=url)
    assert requests == []


def test_acquire_rejects_unknown_dataset_and_source(tmp_path):
    """Unknown dataset / source names raise ValueError listing the valid choices."""
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*fashion_mnist.*indian_pines"):
        acquire("mnist", tmp_path)
    with pytest.raises(ValueError, match=r"unknown data source.*'ftp'.*local.*offline.*download"):
        acquire("fashion_mnist", tmp_path, sources=("ftp",))


# ---------------------------------------------------------------- 2. download path
def test_download_from_mirror_then_local_without_server(fmnist_served, tmp_path):
    """Downloading from a 127.0.0.1 mirror verifies all files; a second call uses them, downloading nothing."""
    handler = functools.partial(_Quiet, directory=str(fmnist_served))
    with serve(handler) as url:
        source = acquire("fashion_mnist", tmp_path, sources=("download",), mirror=url)
    assert url in source and source.startswith("downloaded")
    dataset_dir = tmp_path / "fashion_mnist"
    assert sorted(p.name for p in dataset_dir.iterdir()) == sorted(s.name for s in FMNIST)
    for spec in FMNIST:
        assert (dataset_dir / spec.name).read_bytes() == (fmnist_served / spec.name).read_bytes()
    # The server is stopped now: any download attempt would fail, so success proves local use.
    again = acquire("fashion_mnist", tmp_path, sources=("local", "download"), mirror=url)
    assert again.startswith("local")


def test_truncated_download_raises_and_leaves_nothing(fmnist_served, tmp_path):
    """A response cut short (Content-Length says more) raises DataVerificationError, leaving no file."""
    full = {s.name: (fmnist_served / s.name).read_bytes() for s in FMNIST}
    payload = {k: v[: len(v) // 2] for k, v in full.items()}
    declared = {k: len(v) for k, v in full.items()}
    with serve(bytes_handler(payload, declared)) as url:
        with pytest.raises(DataVerificationError, match="short download"):
            acquire("fashion_mnist", tmp_path, sources=("download",), mirror=url)
    assert_left_empty(tmp_path / "fashion_mnist")


@pytest.mark.parametrize("corruption", ["flipped raw byte", "flipped content byte"])
def test_corrupt_download_raises_and_leaves_nothing(fmnist_served, tmp_path, corruption):
    """A complete download of wrong bytes fails verification and is deleted (no file, no temp file)."""
    first = FMNIST[0].name  # downloaded first: nothing good can be fetched before the failure
    raw = (fmnist_served / first).read_bytes()
    if corruption == "flipped raw byte":
        bad = flip_byte(raw, len(raw) // 2)
    else:
        content = gzip.decompress(raw)
        bad = gzip.compress(flip_byte(content, len(content) // 2), compresslevel=1)
    payload = {s.name: (fmnist_served / s.name).read_bytes() for s in FMNIST} | {first: bad}
    with serve(bytes_handler(payload)) as url:
        with pytest.raises(DataVerificationError, match=f"{first} failed verification"):
            acquire("fashion_mnist", tmp_path, sources=("download",), mirror=url)
    assert_left_empty(tmp_path / "fashion_mnist")


def test_download_of_indian_pines_mat_files(raw_dir, tmp_path):
    """The canonical .mat files, served from 127.0.0.1, are downloaded and verified by array content."""
    from scipy.io import savemat

    mirror_dir = tmp_path / "mirror"
    mirror_dir.mkdir()
    for spec in IP:
        savemat(mirror_dir / spec.name, {spec.array_key: np.load(real_file(raw_dir, "indian_pines", spec.name))})
    with serve(functools.partial(_Quiet, directory=str(mirror_dir))) as url:
        source = acquire("indian_pines", tmp_path / "data", sources=("download",), mirror=url)
    assert url in source
    got = sorted(p.name for p in (tmp_path / "data" / "indian_pines").iterdir())
    assert got == sorted(s.name for s in IP)


def test_unreachable_mirror_raises_data_verification_error(tmp_path):
    """A download source that cannot be reached ends in DataVerificationError, leaving nothing."""
    with serve(bytes_handler({})) as url:
        pass  # started and stopped: the port now refuses connections
    with pytest.raises(DataVerificationError, match="could not obtain verified fashion_mnist"):
        acquire("fashion_mnist", tmp_path, sources=("download",), mirror=url)
    assert_left_empty(tmp_path / "fashion_mnist")


# ---------------------------------------------------------------- 3. the CLI
def test_cli_data_all_reports_sources(raw_dir, capsys):
    """`python -m cgt data --dataset all` (in-process) verifies both datasets, names each source, exits 0."""
    assert cli.main(["data", "--dataset", "all", "--data-dir", str(raw_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for dataset in DATASET_FILES:
        line = next((ln for ln in lines if ln.startswith(f"{dataset}: verified, source: ")), None)
        assert line is not None, lines
        assert "local files in" in line  # the session fixture made them present


def test_cli_unknown_dataset_fails_with_choices(capsys):
    """An unknown dataset exits with status 2 and stderr lists the valid choices."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "--dataset", "mnist"])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    for choice in ("fashion_mnist", "indian_pines", "all"):
        assert choice in err
    assert "mnist" in err and out == ""
