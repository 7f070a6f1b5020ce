"""Root pytest configuration.

Notebooks collected by nbval run in the tiny `smoke` profile: their parameters cells read
CGT_PROFILE (default 'quick' for readers), and kernels started by nbval inherit this environment.
04_figures reads the finished runs of *both* datasets, while nbval executes 01–03 with their
stored default dataset only; so before any notebook runs, the smoke runs of every method on both
datasets are made sure to exist (about 30 s when missing, instant when cached).
"""
import os

os.environ.setdefault("CGT_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_finish(session):
    if not any(str(item.fspath).endswith(".ipynb") for item in session.items):
        return
    from cgt.config import DATASETS, METHODS
    from cgt.experiment import run_methods

    for dataset in DATASETS:
        run_methods(dataset, os.environ["CGT_PROFILE"], list(METHODS), progress=False)
