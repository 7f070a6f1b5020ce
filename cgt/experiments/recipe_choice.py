"""The chosen training recipe of a dataset under a profile: where the search wrote it, and reading it back.

A profile that declares a recipe search for a dataset (cgt.experiments.profiles.RecipeSearch) trains
every run of that dataset with the recipe the search chose on validation (cgt.experiments.recipe):
cgt.experiments.train_evaluate applies it to every run it plans, so notebooks, the CLI and the
pipeline's workers all train with it. Until the search has been run, such a run is refused with a
message saying how to run it — never trained with a silently different recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import resolve
from ..fileio import read_json
from .paths import figures_dir
from .profiles import get_profile


@dataclass(frozen=True)
class Recipe:
    """What every method trains with: the chosen candidate's overrides."""

    data: dict[str, Any] = field(default_factory=dict)
    """DataConfig values / dataset options (run_methods' data_overrides)."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig values (run_methods' train_overrides)."""

    def under(self, data_overrides: dict[str, Any] | None = None,
              train_overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(data, train) overrides of a run that trains with this recipe: the recipe's, with the run's own
        on top (e.g. an ablation's label smoothing); what run_methods / a RunRequest takes."""
        return self.data | (data_overrides or {}), self.train | (train_overrides or {})


def recipe_path(profile: str, dataset: str) -> Path:
    """Where the search of `dataset` under `profile` writes its choice (figures/ for the paper profile)."""
    return figures_dir(profile) / f"recipe_{resolve(dataset).name}.json"


def chosen_recipe(path: str | Path) -> Recipe:
    """The recipe a written search chose: the overrides every method then trains with."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no recipe search at {path}: run the search first (`python -m cgt recipe`, "
                                f"part of `make paper`)")
    chosen = read_json(path)["chosen"]
    return Recipe(dict(chosen["data"]), dict(chosen["train"]))


def profile_recipe(profile: str, dataset: str) -> Recipe:
    """The recipe `profile` trains `dataset` with: the chosen one if the profile declares a search for
    the dataset (an error naming the command when it has not been run), else the profile's own settings."""
    name = resolve(dataset).name
    if name not in get_profile(profile).recipe_search:
        return Recipe()
    path = recipe_path(profile, name)
    if not path.exists():
        raise FileNotFoundError(f"the {profile!r} profile trains {name} with the recipe its search chooses on "
                                f"validation, and {path} does not exist yet: run `python -m cgt recipe --profile "
                                f"{profile}` (the first stage of `python -m cgt paper`)")
    return chosen_recipe(path)
