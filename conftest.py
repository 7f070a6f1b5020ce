"""Root pytest configuration.

Notebooks collected by nbval run in the tiny `smoke` profile: their parameters cells read
CGT_PROFILE (default 'quick' for readers), and kernels started by nbval inherit this environment.
04_figures reads the finished runs of *both* datasets (and of Indian Pines on the spatial and blocked protocols),
while nbval executes 01–03 with their stored default dataset only; so before any notebook runs, the
smoke runs of every method on every (dataset, split) the profile shows are made sure to exist (under
a minute when missing, instant when cached) — after the profile's recipe search, whose choice they train with.
"""
import os

import pytest

os.environ.setdefault("CGT_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(items):
    """Notebook cells under nbval are end-to-end runs: part of the full suite, not of the fast tier."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session):
    if not any(str(item.fspath).endswith(".ipynb") for item in session.items):
        return
    from cgt.data import BUILTIN
    from cgt.experiments.profiles import get_profile
    from cgt.experiments.recipe import run_profile_search, search_is_current
    from cgt.experiments.train_evaluate import run_methods
    from cgt.methods import COMPARED

    profile = os.environ["CGT_PROFILE"]
    for dataset in get_profile(profile).recipe_search:  # first: every run of the dataset trains with its choice
        if not search_is_current(profile, dataset):
            run_profile_search(profile, dataset, progress=False)  # (none in smoke; kept for a profile that has one)
    for dataset in BUILTIN:
        run_methods(dataset, profile, COMPARED, progress=False)
    for dataset in get_profile(profile).spatial:
        run_methods(dataset, profile, COMPARED, split="spatial", progress=False)
    for dataset in get_profile(profile).blocked:
        run_methods(dataset, profile, COMPARED, split="blocked", progress=False)
