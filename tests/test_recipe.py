"""cgt.experiments.recipe: the declared search, chosen on validation only, saved and read back."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from cgt.experiments import recipe
from cgt.experiments.recipe import GRIDS, Candidate, Recipe, choose, chosen_recipe, grid, search_plan, write_search

CANDIDATES = grid(patch_size=[5, 7], augment=[{}, {"flip": True, "rot90": True}])


def hand_table() -> pd.DataFrame:
    """Validation favours `patch_size=7 augment=none` (mean 0.60); test favours `patch_size=5 augment=flip+rot90`."""
    scores = {  # candidate → per seed (val acc, test acc)
        "patch_size=5 augment=none": [(0.50, 0.40), (0.52, 0.42)],
        "patch_size=5 augment=flip+rot90": [(0.55, 0.80), (0.57, 0.82)],
        "patch_size=7 augment=none": [(0.61, 0.30), (0.59, 0.32)],
        "patch_size=7 augment=flip+rot90": [(0.40, 0.50), (0.42, 0.50)],
    }
    return pd.DataFrame([{"candidate": name, "fold": None, "seed": seed, "val_accuracy": v, "val_f1_macro": v / 2,
                          "test_accuracy": t, "test_f1_macro": t / 2, "train_seconds": 20.0}
                         for name, per_seed in scores.items() for seed, (v, t) in enumerate(per_seed)])


def test_grid_is_the_product_in_declaration_order_with_overrides_split_by_destination():
    assert [c.name for c in CANDIDATES] == ["patch_size=5 augment=none", "patch_size=5 augment=flip+rot90",
                                            "patch_size=7 augment=none", "patch_size=7 augment=flip+rot90"]
    assert CANDIDATES[1].recipe == Recipe({"patch_size": 5}, {"augment": {"flip": True, "rot90": True}})
    (c,) = grid(weight_decay=[0.05], augment=[{"noise_std": 0.1}])
    assert c.name == "weight_decay=0.05 augment=noise_std=0.1" and c.recipe.data == {}


@pytest.mark.parametrize("knobs, word", [({}, "empty grid"), ({"patchsize": [5]}, "patchsize"),
                                         ({"patch_size": []}, "no values"), ({"augment": [{"mixup": True}]}, "mixup")])
def test_bad_grids_are_refused_naming_the_problem(knobs, word):
    with pytest.raises(ValueError, match=word):
        grid(**knobs)


def test_declared_grids_are_valid_and_unique():
    for candidates in recipe.GRIDS.values():
        recipe.check_candidates(candidates)
    assert len(recipe.GRIDS["paper"]) == 9


def test_empty_or_repeated_candidates_are_refused():
    with pytest.raises(ValueError, match="empty recipe grid"):
        search_plan("indian_pines", "paper", [], seeds=[0])
    with pytest.raises(ValueError, match="repeated"):
        search_plan("indian_pines", "paper", [CANDIDATES[0], CANDIDATES[0]], seeds=[0])
    with pytest.raises(ValueError, match="seed"):
        search_plan("indian_pines", "paper", CANDIDATES, seeds=[])


def test_plan_is_candidate_by_fold_by_seed():
    plan = search_plan("indian_pines", "paper", CANDIDATES[:2], seeds=[0, 1], split="blocked", folds=[0, 1, 2])
    assert len(plan) == 2 * 3 * 2
    first = plan[0]
    assert (first.method, first.seed, first.split, first.candidate) == ("joint_uniform", 0, "blocked", CANDIDATES[0].name)
    assert first.data_overrides == {"patch_size": 5} and first.fold == 0
    assert plan[-1].data_overrides == {"patch_size": 5} and plan[-1].fold == 2
    assert plan[-1].train_overrides == {"augment": {"flip": True, "rot90": True}}
    # no folds: the candidate's data overrides alone
    assert search_plan("indian_pines", "paper", CANDIDATES[:1], seeds=[3])[0].data_overrides == {"patch_size": 5}


def test_choice_follows_validation_even_when_test_would_pick_another():
    table = hand_table()
    assert choose(table, CANDIDATES).name == "patch_size=7 augment=none"
    test_best = table.groupby("candidate")["test_accuracy"].mean().idxmax()
    assert test_best == "patch_size=5 augment=flip+rot90"  # the table really is a trap
    with pytest.raises(ValueError, match="validation only"):
        choose(table, CANDIDATES, score="test_accuracy")


def test_ties_go_to_the_earlier_candidate():
    table = hand_table()
    table["val_accuracy"] = 0.5
    assert choose(table, CANDIDATES).name == CANDIDATES[0].name


def test_candidates_scored_on_different_seeds_are_refused():
    table = hand_table().drop(index=0)
    with pytest.raises(ValueError, match="different seeds"):
        choose(table, CANDIDATES)
    with pytest.raises(ValueError, match="no runs of candidate"):
        choose(hand_table(), [*CANDIDATES, Candidate("other", Recipe())])


def test_written_search_records_every_candidate_and_reads_back_the_choice(tmp_path):
    path = tmp_path / "recipe_search.json"
    chosen = write_search(path, hand_table(), CANDIDATES, {"dataset": "indian_pines", "split": "spatial"}, wall_time_s=1.5)
    record = json.loads(path.read_text())
    assert [c["name"] for c in record["candidates"]] == [c.name for c in CANDIDATES]
    assert record["chosen"]["name"] == chosen.name == "patch_size=7 augment=none"
    assert record["candidates"][2]["mean"]["val_accuracy"] == pytest.approx(0.60)
    assert [r["seed"] for r in record["candidates"][0]["runs"]] == [0, 1]
    assert (tmp_path / "recipe_search.json.provenance.json").exists()
    assert chosen_recipe(path) == Recipe({"patch_size": 7}, {"augment": {}})
    with pytest.raises(FileNotFoundError, match="run the search first"):
        chosen_recipe(tmp_path / "missing.json")


def test_a_runs_own_overrides_go_on_top_of_the_recipe():
    chosen = Recipe({"patch_size": 5}, {"augment": {"flip": True}, "weight_decay": 0.05})
    data, train = chosen.under({"fold": 2}, {"label_smoothing": 0.1, "weight_decay": 0.0})
    assert data == {"patch_size": 5, "fold": 2}
    assert train == {"augment": {"flip": True}, "weight_decay": 0.0, "label_smoothing": 0.1}
    assert chosen.under() == (chosen.data, chosen.train) and chosen.data == {"patch_size": 5}  # not mutated


@pytest.mark.usefixtures("one_thread")
def test_search_trains_through_the_run_cache_and_collects_the_same_table(tmp_path, monkeypatch):
    """End to end on the smoke profile: the search trains its runs, a second pass finds them finished."""
    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "runs"))
    candidates = grid(patch_size=[3], augment=[{}, {"flip": True, "rot90": True}])
    chosen = recipe.finish_search("indian_pines", "smoke", candidates, [0], tmp_path / "a.json", split="spatial",
                                  train=True, progress=False)
    again = recipe.finish_search("indian_pines", "smoke", candidates, [0], tmp_path / "b.json", split="spatial")
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert [c["mean"]["val_accuracy"] for c in a["candidates"]] == [c["mean"]["val_accuracy"] for c in b["candidates"]]
    assert chosen == again == chosen_recipe(tmp_path / "a.json")
    assert chosen.data == {"patch_size": 3}


def test_a_profile_with_a_declared_search_trains_every_run_with_its_choice(tmp_path, monkeypatch):
    """The paper profile's path on a smoke-sized profile of its own: before the search, a run of the dataset
    is refused with the command to run; the pipeline's search stage trains the candidates (through the
    runner) and writes the choice; then every planned run carries the chosen recipe, an explicit override
    still wins, and a second stage skips the search as current."""
    import dataclasses

    from cgt.experiments import profiles
    from cgt.experiments.recipe_choice import profile_recipe, recipe_path
    from cgt.experiments.train_evaluate import run_paths
    from cgt.pipeline.notebooks import _recipe_searches

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    searched = dataclasses.replace(profiles.PROFILES["smoke"], name="searched",
                                   recipe_search={"indian_pines": profiles.RecipeSearch("smoke", "random", [0])})
    monkeypatch.setitem(profiles.PROFILES, "searched", searched)
    with pytest.raises(FileNotFoundError, match="python -m cgt recipe --profile searched"):
        run_paths("indian_pines", "searched", ["joint_uniform"], [0])
    logs = []
    (record,) = _recipe_searches("searched", ["indian_pines", "fashion_mnist"], 1, None, False, logs.append)
    assert record["runs_trained"] == len(GRIDS["smoke"]) and not record["skipped"]
    chosen = profile_recipe("searched", "indian_pines")
    assert chosen.data["patch_size"] in (3, 5) and recipe_path("searched", "indian_pines").exists()
    (path,) = run_paths("indian_pines", "searched", ["soft_cgt"], [0]).values()
    key_with = path.name
    (plain,) = run_paths("indian_pines", "searched", ["soft_cgt"], [0], recipe=False).values()
    assert key_with != plain.name  # the recipe is part of the run: another key
    (override,) = run_paths("indian_pines", "searched", ["soft_cgt"], [0],
                            data_overrides={"patch_size": 7 if chosen.data["patch_size"] != 7 else 9}).values()
    assert override.name not in (key_with, plain.name)
    (again,) = _recipe_searches("searched", ["indian_pines"], 1, None, False, logs.append)
    assert again["skipped"] and "was chosen by this search with this code" in logs[-1]


def test_recipe_command_refuses_a_profile_without_a_search_and_bad_folds_come_first(capsys):
    """`python -m cgt recipe --profile quick` names the profiles that search; a bad fold under the paper profile
    is reported as a bad fold, before the recipe the profile needs is even looked for."""
    from cgt import cli

    assert cli.main(["recipe", "--profile", "quick"]) == 2
    assert "profiles that do: ['paper']" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", "indian_pines", "--profile", "paper", "--method", "hard_cgt",
                     "--split", "blocked", "--fold", "9"]) == 2
    assert "fold=9 must be in 0 … 4" in capsys.readouterr().err
