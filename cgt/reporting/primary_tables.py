"""The pre-registered verdicts (PREREGISTRATION.md, cgt.evaluation.primary) from a profile's finished runs,
written as the tables the README's headline and the results pages quote.

    python -m cgt verdicts --profile paper
      → figures/table_primary_verdicts.csv / .md     one row per hypothesis of the family
        figures/table_primary_comparators.csv / .md  the comparator each dataset's verdicts use, and why
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import display_name
from ..evaluation import primary
from ..experiments.paths import figures_dir, runs_dir
from ..experiments.provenance import project_relative, write_sidecar
from ..experiments.train_evaluate import EvaluatedRun, load_finished
from ..methods import CGT_METHODS, JOINT_BASELINES
from .tables import write_table

PRIMARY_PROTOCOLS = {"fashion_mnist": "random", "indian_pines": "blocked"}
"""Dataset → the split its primary verdicts are about (PREREGISTRATION.md): Fashion-MNIST's own split,
Indian Pines' spatially blocked cross-validation."""
PROTOCOL_WORDS = {"random": "its own split", "blocked": "blocked CV", "spatial": "spatial split"}


def run_logits(records: list[EvaluatedRun]) -> list[primary.RunLogits]:
    """The analysis' view of finished runs: cached logits, paired by (seed, fold)."""
    out = []
    for r in records:
        lg = r.run.logits
        replicate = (r.seed, getattr(r, "fold", None))
        out.append(primary.RunLogits(r.method, replicate, lg["val"], lg["y_val"], lg["test"], lg["y_test"],
                                     r.train_counts))
    return out


def primary_groups(profile: str, protocols: dict[str, str] = PRIMARY_PROTOCOLS) -> tuple[dict, list[EvaluatedRun]]:
    """(the analysis' groups, every record they came from): the comparator candidates and the CGT variants
    of each dataset's primary protocol. A missing run is an error naming how to make it (load_finished)."""
    groups, everything = {}, []
    for dataset, split in protocols.items():
        records = load_finished(dataset, profile, [*JOINT_BASELINES, *CGT_METHODS], split=split)
        everything += records
        groups[(display_name(dataset), split)] = {"runs": run_logits(records), "costs": records[0].costs,
                                                  "num_classes": records[0].run.logits["val"].shape[-1]}
    return groups, everything


def shown(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as people read it: one decimal place where it is meaningful, both sides' costs,
    'reached k/n', and the rare-class share of a macro-F1 difference."""
    rows = []
    for _, v in verdicts.iterrows():
        row = {"dataset": v["dataset"], "protocol": PROTOCOL_WORDS.get(v["protocol"], v["protocol"]),
               "CGT": v["CGT"], "comparator": v["comparator"], "endpoint": primary.ENDPOINTS[v["endpoint"]],
               "replicates": int(v["n"]),
               "Δ, points [95% bootstrap CI]": f"{v['delta']:+.2f} [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]",
               "95% t CI over replicates": f"[{v['t_low']:+.2f}, {v['t_high']:+.2f}]",
               "Holm p (better)": f"{v['p_superiority_holm']:.3g}",
               "Holm p (non-inferior)": f"{v['p_non_inferiority_holm']:.3g}",
               "Holm p (worse by > δ)": f"{v['p_inferiority_holm']:.3g}",
               "verdict": v["verdict"],
               "rel. cost CGT / comparator": f"{v['cgt_cost']:.3f} / {v['rival_cost']:.3f}"}
        reached = v.get("cgt_reached")
        row["budget reached CGT / comparator"] = (f"{reached} / {v['rival_reached']}"
                                                  if isinstance(reached, str) else "—")
        rare = v.get("delta_rare")
        row["Δ from rare / other classes"] = (f"{rare:+.2f} / {v['delta_rest']:+.2f}"
                                              if isinstance(rare, float) and not np.isnan(rare) else "—")
        rows.append(row)
    return pd.DataFrame(rows)


def write_primary(profile: str, samples: int = primary.BOOTSTRAP_SAMPLES) -> list[Path]:
    """Run the pre-registered analysis on the profile's runs and write its tables (full precision in
    `table_primary_verdicts_raw.csv`), each with a provenance sidecar."""
    t0 = time.perf_counter()
    groups, records = primary_groups(profile)
    verdicts, choices = primary.primary_family(groups, CGT_METHODS, samples=samples)
    seconds = time.perf_counter() - t0
    out = figures_dir(profile)
    root = runs_dir(profile)
    params = {"profile": profile, "protocols": PRIMARY_PROTOCOLS, "bootstrap_samples": samples,
              "alpha": primary.ALPHA, "margin": primary.MARGIN, "budget": primary.PRIMARY_BUDGET,
              "runs_root": project_relative(root),
              "runs": sorted(str(r.run.run_dir.relative_to(root)) for r in records)}
    written = []
    raw = verdicts.drop(columns=["per_replicate"]).assign(
        per_replicate=[" ".join(f"{d:+.4f}" for d in v) for v in verdicts["per_replicate"]])
    for name, df in (("primary_verdicts", shown(verdicts)), ("primary_comparators", _comparators(choices)),
                     ("primary_verdicts_raw", raw)):
        stem = out / f"table_{name}"
        write_table(df, stem)
        write_sidecar(f"{stem}.csv", params=params, wall_time_s=seconds)
        written += [Path(f"{stem}.csv"), Path(f"{stem}.md")]
    return written


def _comparators(choices: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"dataset": choices["dataset"],
                         "protocol": [PROTOCOL_WORDS.get(p, p) for p in choices["protocol"]],
                         "joint baseline": choices["method"], "replicates": choices["replicates"],
                         "validation AUC, %": [f"{v:.2f}" for v in choices["validation AUC, %"]],
                         "chosen": ["yes" if c else "" for c in choices["chosen"]]})
