"""The classic floor of a scene dataset on every protocol, fold and seed the networks of a profile use
(cgt.evaluation.floor), as one table: figures/table_indian_pines_floor.csv with its sidecar.

    table = floor_table("paper")            # protocol, fold, seed, model, oa, aa, kappa, macro_f1, …
    write_floor_table("paper")              # notebook 04, for the profile that publishes
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..data import SPLITS
from ..data.indian_pines import load_raw
from ..evaluation.floor import FLOOR_COLUMNS, FloorConfig, floor_rows
from ..fileio import atomic_path
from .paths import data_dir as default_data_dir
from .paths import figures_dir
from .profiles import get_profile
from .provenance import write_sidecar
from .train_evaluate import load_dataset, protocol_folds

DATASET = "indian_pines"
"""The scene the floor is computed on (per-pixel spectra need the raw cube)."""


def floor_protocols(profile: str) -> list[str]:
    """The protocols the pipeline runs Indian Pines on under `profile`: its random split, then the
    spatial splits the profile plans."""
    prof = get_profile(profile)
    return ["random", *[s for s in ("spatial", "blocked") if DATASET in prof.datasets_on(s)]]


def floor_table(profile: str, protocols: list[str] | None = None, data_dir: str | None = None,
                cfg: FloorConfig = FloorConfig(), workers: int = 1) -> tuple[pd.DataFrame, dict[str, str]]:
    """(the floor's rows for every protocol × fold × seed of `profile`, on the very pixels the networks
    train and are tested on; the checksum of each cell's prepared data). `workers` processes fit the
    cells side by side (each fit is single-threaded; about 30 s of CPU for a paper-profile blocked cell)."""
    from joblib import Parallel, delayed

    prof = get_profile(profile)
    cells = [(protocol, fold, seed) for protocol in protocols or floor_protocols(profile)
             for fold in protocol_folds(DATASET, profile, protocol) for seed in prof.plan_for(DATASET, protocol).seeds]
    done = Parallel(n_jobs=workers)(delayed(_floor_cell)(profile, *cell, data_dir, cfg) for cell in cells)
    table = pd.DataFrame([row for rows, _ in done for row in rows], columns=FLOOR_COLUMNS)
    table["fold"] = table["fold"].astype("Int64")  # empty (not NaN, not 0.0) where the protocol has no folds
    checksums = {f"{protocol} fold {fold} seed {seed}": checksum for (protocol, fold, seed), (_, checksum) in zip(cells, done)}
    return table, checksums


def _floor_cell(profile: str, protocol: str, fold: int | None, seed: int, data_dir: str | None,
                cfg: FloorConfig) -> tuple[list[dict], str]:
    """The floor's rows of one (protocol, fold, seed) and the checksum of the data they were fitted on."""
    cube, _ = load_raw(data_dir or default_data_dir())
    # the random split is drawn once (the profile's data seed); the spatial ones anew for each seed
    data = load_dataset(DATASET, profile, data_dir, protocol, split_seed=None if protocol == "random" else seed,
                        fold=fold)
    pixels = {s: data.extras[f"pixels_{s}"] for s in SPLITS}
    labels = {s: data.y[s].numpy() for s in SPLITS}
    return floor_rows(cube, pixels, labels, protocol, fold, seed, cfg), data.checksum


def write_floor_table(profile: str, protocols: list[str] | None = None, data_dir: str | None = None,
                      cfg: FloorConfig = FloorConfig(), workers: int = 1) -> tuple[pd.DataFrame, Path]:
    """Compute the floor and write <figures>/table_indian_pines_floor.csv (atomically) with its sidecar."""
    t0 = time.perf_counter()
    table, checksums = floor_table(profile, protocols, data_dir, cfg, workers)
    path = figures_dir(profile) / f"table_{DATASET}_floor.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    write_sidecar(path, params={"profile": profile, "dataset": DATASET, "floor": vars(cfg)},
                  seed=sorted(set(table["seed"].tolist())), data_checksums=checksums,
                  wall_time_s=time.perf_counter() - t0)
    return table, path


def floor_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per protocol and model: mean ± sample SD (%) of OA, AA, κ (×100) and macro-F1 over the (fold, seed)
    cells, and how many cells (n)."""
    metrics = ["oa", "aa", "kappa", "macro_f1"]
    grouped = table.groupby(["protocol", "model"], sort=False)[metrics]
    mean, sd = grouped.mean() * 100, grouped.std(ddof=1).fillna(0.0) * 100
    out = pd.DataFrame({m: [f"{a:.1f} ± {b:.1f}" for a, b in zip(mean[m], sd[m])] for m in metrics}, index=mean.index)
    out["n"] = grouped.size()
    return out.reset_index()
