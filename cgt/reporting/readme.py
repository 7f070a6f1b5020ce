"""The README's answer block, assembled from artifacts only: the pre-registered verdicts, one headline table
per dataset and protocol, one figure, the commands' measured times. Every number in it is generated here;
nothing between the markers is typed. The detailed tables live once each on the results pages
(cgt.reporting.results_pages).

    python -m cgt results [--profile paper] [--stdout]
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..evaluation import primary
from ..evaluation.evaluate import budget_point_name
from ..experiments.provenance import project_relative, write_sidecar
from ..fileio import atomic_path, read_json, write_json_atomic
from ..methods import CGT_METHODS, display_order
from ..pipeline.notebooks import RUNNER_STEP

RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"
TIMING = "pipeline_timing.json"
HEADLINE_POINT = budget_point_name(primary.PRIMARY_BUDGET)
"""The headline tables' operating point: the pre-registered matched budget, fitted on validation."""
PROTOCOLS = {  # table label (metrics_<label>_all_runs.csv) → (dataset, protocol, what it is for)
    "fashion_mnist": ("fashion_mnist", "random", "Fashion-MNIST, its own train/test split (primary)"),
    "indian_pines_blocked": ("indian_pines", "blocked", "Indian Pines, spatially blocked cross-validation (primary)"),
    "indian_pines_spatial": ("indian_pines", "spatial", "Indian Pines, directional spatial split (stress test)"),
    "indian_pines": ("indian_pines", "random", "Indian Pines, random pixel split (the paper's; patches leak)"),
}


def publish_timing(runs_profile_dir: Path, fig_dir: Path) -> dict | None:
    """Copy, next to the figures, the timing of the latest complete pipeline run and of the latest one
    that trained runs (runs/<profile>/pipeline_timings.json), so the wall times quoted in the README
    have a committed artifact. None if no pipeline run was recorded."""
    source = runs_profile_dir / "pipeline_timings.json"
    if not source.exists():
        return None
    entries = read_json(source)
    trained = [e for e in entries if sum(s["runs_trained"] for s in e["steps"]) > 0]
    published = {"latest": entries[-1], "latest_training": trained[-1] if trained else None}
    write_json_atomic(fig_dir / TIMING, published)
    write_sidecar(fig_dir / TIMING, params={"source": project_relative(source)},
                  wall_time_s=published["latest"]["wall_time_s"])
    return published


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _describe(t: dict) -> str:
    trained = sum(s["runs_trained"] for s in t["steps"])
    cached = sum(s["runs_cached"] for s in t["steps"])
    commit = (t["git"].get("commit") or "unknown")[:7] + (" with uncommitted changes" if t["git"].get("dirty") else "")
    runner = [s for s in t["steps"] if s["step"].startswith(RUNNER_STEP)]  # the stages that train runs before the notebooks
    notebooks = [s for s in t["steps"] if s not in runner]
    skipped = sum(bool(s.get("skipped")) for s in notebooks)
    steps = f"{len(notebooks)} notebooks" + (f" ({skipped} skipped as unchanged)" if skipped else "")
    training = [s for s in runner if s["runs_trained"]]
    first = "".join(f"; {'then' if i else 'first'} {s['runs_trained']} {s['step']} in {_duration(s['seconds'])}"
                    for i, s in enumerate(training))
    return (f"{steps} in {_duration(t['wall_time_s'])} ({t['finished'][:10]}, commit "
            f"`{commit}`, {t['device']}{first}): {trained} training runs trained, {cached} taken from the run cache")


def timing_sentence(fig_dir: Path, datasets: list[str]) -> str:
    """When and at which commit the runs were trained and the tables written, from the artifacts."""
    path = fig_dir / TIMING
    if path.exists():
        t = read_json(path)
        text = f"Pipeline timing (`figures/{TIMING}`): the latest complete pipeline run took {_describe(t['latest'])}."
        if t["latest_training"] and t["latest_training"] != t["latest"]:
            text += f" The latest run that trained runs took {_describe(t['latest_training'])}."
    else:
        text = f"No pipeline timing was recorded for these figures (`figures/{TIMING}` is missing)."
    written = set()
    for ds in datasets:
        sidecar = fig_dir / f"table_{ds}_paper_tau.csv.provenance.json"
        if sidecar.exists():
            git = read_json(sidecar)["git"]
            written.add((git.get("commit") or "unknown")[:7] + (" with uncommitted changes" if git.get("dirty") else ""))
    if written:
        text += f" The tables and figures below were written at commit {', '.join(f'`{c}`' for c in sorted(written))}" \
                f" (every sidecar records its commit)."
    return text + (" Training runs are keyed by the source of the modules training executes, so a run trained at an "
                   "earlier commit is reused only while that code is unchanged.")


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the results markers of the README (atomically)."""
    text = readme.read_text()
    if RESULTS_START not in text or RESULTS_END not in text:
        raise ValueError(f"{readme} has no {RESULTS_START} … {RESULTS_END} markers")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    with atomic_path(readme) as tmp:
        Path(tmp).write_text(f"{head}{RESULTS_START}\n{section}\n{RESULTS_END}{tail}")


# ---------------------------------------------------------------- the answer block
def reproduction_sentence(fig_dir: Path) -> str:
    """How long reproducing took, from the pipeline's own timing record: the latest run that trained, and
    the latest one (often a re-run with nothing to redo, which is not the reproduction time)."""
    path = fig_dir / TIMING
    if not path.exists():
        return f"No pipeline timing is committed with these figures (`figures/{TIMING}`)."
    t = read_json(path)
    parts = []
    if t["latest_training"]:
        run = t["latest_training"]
        trained = sum(s["runs_trained"] for s in run["steps"])
        cached = sum(s["runs_cached"] for s in run["steps"])
        parts.append(f"**Time:** the latest `make paper` that trained runs took {_duration(run['wall_time_s'])} "
                     f"({run['finished'][:10]}, commit `{(run['git'].get('commit') or 'unknown')[:7]}`, {run['device']}; "
                     f"{trained} runs trained, {cached} reused from the run cache)")
    latest = t["latest"]
    if latest != t["latest_training"]:
        parts.append(("the latest one" if parts else "**Time:** no recorded `make paper` trained runs; the latest one")
                     + f", with {sum(s['runs_trained'] for s in latest['steps'])} runs to train, took "
                     f"{_duration(latest['wall_time_s'])}")
    return "; ".join(parts) + f" (`figures/{TIMING}`)."


def premise_lines(fig_dir: Path, reference: str = "joint_uniform") -> list[str]:
    """The paper's premise as measured here: under fixed equal weights, the last exit's share of the gradient
    on the first block (which every exit reaches) and the cosine between the first and last exits' gradients,
    with their intervals over seeds (notebook 06's interference tables). Tables from before the measurement
    compared each pair on the blocks both exits reach are named as such, not quoted as the measurement."""
    lines = []
    for path in sorted(fig_dir.glob("table_*_ablation_interference.csv")):
        table = pd.read_csv(path)
        dataset = path.name[len("table_"):-len("_ablation_interference.csv")]
        if "seeds" not in table or reference not in set(table["method"]):
            lines.append(f"* {dataset}: `{path.name}` predates the fair measurement (one seed, every exit's gradient "
                         f"padded with zeros to the shared blocks); the next `make paper` measures it again.")
            continue
        row = table.set_index("method").loc[reference]
        last = [c for c in table.columns if c.endswith("norm share %")][-1]
        cos = next(c for c in table.columns if c.startswith("cos exits 1·"))
        lines.append(f"* {dataset} (`{reference}`, {int(row['seeds'])} seeds): the last exit holds {row[last]} % of "
                     f"the gradient norm on the first block; {cos}: {row[cos]} (mean [95 % interval]; a negative "
                     f"cosine would be conflict).")
    return (["**The premise, measured** (notebook 06; the paper says deep exits dominate and conflict with "
             "shallow ones):", "", *lines, ""] if lines else [])


def primary_rows(fig_dir: Path) -> pd.DataFrame | None:
    """The pre-registered verdicts at full precision, or None when they were not computed for these figures."""
    path = fig_dir / "table_primary_verdicts_raw.csv"
    return pd.read_csv(path) if path.exists() else None


def answer_lines(fig_dir: Path) -> list[str]:
    """One line per dataset: the pre-registered answer and the verdicts it rests on."""
    rows = primary_rows(fig_dir)
    if rows is None:
        return ["**Not answered yet at this commit:** the pre-registered verdicts ([PREREGISTRATION.md]"
                "(PREREGISTRATION.md)) are computed by `make paper` from the runs they govern, and these figures "
                "predate them. The tables below are exploratory."]
    lines = []
    for dataset, group in rows.groupby("dataset", sort=False):
        answer = primary.dataset_answer(group["verdict"])
        detail = "; ".join(f"`{r['CGT']}` {primary.ENDPOINTS[r['endpoint']]}: {r['verdict']} "
                           f"({r['delta']:+.2f} points [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}])"
                           for _, r in group.iterrows())
        protocol = group["protocol"].iloc[0]
        lines.append(f"* **{dataset}** ({protocol}; against `{group['comparator'].iloc[0]}`, chosen on validation): "
                     f"**{answer}** — {detail}.")
    return lines


def headline_table(fig_dir: Path, label: str) -> list[str]:
    """Method, accuracy, macro-F1 and relative cost at the matched budget (mean over replicates), and the
    primary verdicts of the CGT rows, for one dataset and protocol."""
    path = fig_dir / f"metrics_{label}_all_runs.csv"
    if not path.exists():
        return []
    dataset, protocol, words = PROTOCOLS[label]
    df = pd.read_csv(path)
    at = df[df["operating_point"] == HEADLINE_POINT]
    means = at.groupby("method")[["accuracy", "f1_macro", "avg_cost_relative"]].mean()
    replicates = at.groupby("method").size()
    verdicts = primary_rows(fig_dir)
    n = f"{replicates.min()}" if replicates.min() == replicates.max() else f"{replicates.min()}–{replicates.max()}"
    lines = [f"**{words}** — test split, validation-fitted thresholds at relative cost ≤ {primary.PRIMARY_BUDGET:g}, "
             f"mean over {n} replicates:", "",
             "| method | accuracy % | macro-F1 % | rel. cost | pre-registered verdict (AUC · macro-F1) |",
             "|---|---|---|---|---|"]
    for method in display_order(means.index):
        m = means.loc[method]
        verdict = "—"
        if verdicts is not None and method in CGT_METHODS:
            mine = verdicts[(verdicts["CGT"] == method) & (verdicts["protocol"] == protocol)
                            & (verdicts["dataset"].str.replace("-", "_").str.lower() == dataset)]
            if not mine.empty:
                verdict = " · ".join(mine.sort_values("endpoint")["verdict"])
        lines.append(f"| `{method}` | {100 * m['accuracy']:.2f} | {100 * m['f1_macro']:.2f} | "
                     f"{m['avg_cost_relative']:.3f} | {verdict} |")
    return lines + [""]


def headline_markdown(fig_dir: Path) -> str:
    """The README's answer block: the answer per dataset, one table per dataset and protocol, one figure,
    how long reproducing takes, and where everything else is."""
    parts = [*answer_lines(fig_dir), "", *premise_lines(fig_dir)]
    for label in PROTOCOLS:
        parts += headline_table(fig_dir, label)
    figure = next((f"{fig_dir.name}/accuracy_vs_cost_{label}.png" for label in PROTOCOLS
                   if (fig_dir / f"accuracy_vs_cost_{label}.png").exists()), None)
    if figure:
        parts += [f"![accuracy against relative cost, {figure.split('_cost_')[1][:-4]}]({figure})", ""]
    parts += [reproduction_sentence(fig_dir), "", "Every table, figure and exploratory verdict, and the commit "
              "each was written at: [results/](results/index.md).", ""]
    return "\n".join(parts)
