"""The results site (`make site`, cgt.reporting.site) and the MathJax every published page loads
(cgt.pipeline.mathjax): the site is built from a copy of the repository's pages plus a tiny results page,
then every page is opened in headless Chromium."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from headless_chromium import Chromium, SiteServer, broken_links, failed_requests

from cgt.pipeline.mathjax import LOCAL_CONFIG, copy_mathjax, script_url
from cgt.reporting.site import page_title, results_index, site_sources

ROOT = Path(__file__).resolve().parents[1]


def test_site_sources_are_the_results_pages_notebooks_and_figures(tmp_path):
    for rel in ["results/toy.md", "paper/01_x.ipynb", "paper/01_x.html", "figures/a.png", "figures/a.pdf",
                "docs/index.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert site_sources(tmp_path) == ["figures/a.png", "paper/01_x.ipynb", "results/toy.md"]  # no pre-registration here


def test_results_index_links_every_page_by_its_title():
    assert page_title("intro\n# Toy results ##\n## more", "toy") == "Toy results"
    assert page_title("no heading", "toy") == "toy"
    index = results_index({"b.md": "# Bee", "a.md": "text"})
    assert index.splitlines()[2:] == ["* [a](a.md)", "* [Bee](b.md)"]
    assert "No results pages yet" in results_index({})


def test_mathjax_copy_drops_unused_parts_and_adds_the_local_config(tmp_path):
    source = tmp_path / "static"
    for rel in ["MathJax.js", "jax/output/SVG/x.js", "jax/output/HTML-CSS/x.js", "extensions/a11y/x.js",
                "localization/en/en.js", "localization/de/de.js"]:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text("//")
    dest = copy_mathjax(tmp_path / "out" / "mathjax", source)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["MathJax.js", f"config/{LOCAL_CONFIG}.js", "jax/output/HTML-CSS/x.js", "localization/en/en.js"]
    assert 'webFont: "STIX-Web"' in (dest / "config" / f"{LOCAL_CONFIG}.js").read_text()
    assert copy_mathjax(dest, source) == dest and not (dest.parent / "mathjax.tmp").exists()  # replaces in place
    assert script_url("../mathjax/") == "../mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/cgt"


def test_failed_requests_reads_the_devtools_log():
    origin = "http://127.0.0.1:1/"
    sent = lambda i, url: {"method": "Network.requestWillBeSent", "params": {"requestId": i, "request": {"url": url}}}
    events = [sent("1", origin + "ok.js"), sent("2", origin + "gone.png"), sent("3", "https://cdn.example/x.js"),
              sent("4", "data:image/png;base64,AA"), sent("5", origin + "stopped.js"), sent("6", origin + "favicon.ico"),
              {"method": "Network.responseReceived", "params": {"requestId": "6", "response": {"url": origin + "favicon.ico", "status": 404}}},
              {"method": "Network.responseReceived", "params": {"requestId": "1", "response": {"url": origin + "ok.js", "status": 200}}},
              {"method": "Network.responseReceived", "params": {"requestId": "2", "response": {"url": origin + "gone.png", "status": 404}}},
              {"method": "Network.loadingFailed", "params": {"requestId": "3", "errorText": "net::ERR_NAME_NOT_RESOLVED"}},
              {"method": "Network.loadingFailed", "params": {"requestId": "5", "errorText": "x", "canceled": True}}]
    assert failed_requests(events, origin) == [f"{origin}gone.png (HTTP 404)", "https://cdn.example/x.js (net::ERR_NAME_NOT_RESOLVED)",
                                               "https://cdn.example/x.js (off-site)"]


def test_broken_links_finds_missing_pages_and_anchors(tmp_path):
    (tmp_path / "a.html").write_text('<h2 id="fixed-$%5Ctau$">x</h2>')
    origin = "http://127.0.0.1:1/"
    links = [origin + "a.html", origin + "a.html#fixed-$%5Ctau$", origin + "a.html#nope", origin + "b.html",
             "https://example.org/"]
    assert broken_links(links, origin, tmp_path) == [f"{origin}a.html#nope (no such anchor)", f"{origin}b.html (no such file)"]


TOY_RESULTS = """# Toy dataset

## Accuracy at fixed $\\tau = 0.9$

| method | accuracy |
|---|---|
| hard_cgt | 90.00 |

![toy figure](../figures/toy_site_check.png)

Back to the [method](../method.md#the-gates).
"""


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    """The site built from a copy of the repository's mkdocs.yml, docs/, executed notebooks and figures,
    plus the results pages (a tiny one written here when the repository has none yet)."""
    project = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "docs", project / "docs")
    for folder, pattern in (("paper", "*.ipynb"), ("figures", "*.png"), ("results", "*.md")):
        (project / folder).mkdir()
        for path in (ROOT / folder).glob(pattern):
            shutil.copy(path, project / folder / path.name)
    shutil.copy(ROOT / "PREREGISTRATION.md", project)  # the results pages link the verdicts to it
    if not list((project / "results").glob("*.md")):
        (project / "results" / "toy.md").write_text(TOY_RESULTS)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(project / "figures" / "toy_site_check.png")
    plt.close(fig)
    config = (ROOT / "mkdocs.yml").read_text().replace("cgt/reporting/site.py", str(ROOT / "cgt/reporting/site.py"))
    (project / "mkdocs.yml").write_text(config)
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=project,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    return project / "site"


@pytest.mark.slow
def test_every_page_of_the_site_loads_offline_with_its_math_images_and_links(built_site):
    pages = sorted(p.relative_to(built_site).as_posix() for p in built_site.rglob("*.html")
                   if not p.relative_to(built_site).parts[0] == "mathjax")
    assert {"index.html", "method.html", "usage.html", "results/index.html", "paper/04_figures.html"} <= set(pages)
    problems = []
    with SiteServer(built_site) as server, Chromium() as browser:
        for page in pages:
            report = browser.check_page(server.base + page, server.base)
            for kind in ("failed_requests", "broken_images", "raw_math_headings"):
                problems += [f"{page}: {kind}: {item}" for item in getattr(report, kind)]
            problems += [f"{page}: broken link: {link}" for link in broken_links(report.links, server.base, built_site)]
    assert problems == []


@pytest.mark.slow
def test_published_html_export_renders_its_math_offline(tmp_path, monkeypatch):
    """cgt.pipeline.notebooks.publish_notebooks on a real executed notebook (headings with $\\tau$): the
    export loads MathJax from the folder beside it, makes no failed or off-site request, and no heading
    keeps raw $…$."""
    from cgt.pipeline.notebooks import publish_notebooks

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "runs"))
    executed = tmp_path / "runs" / "smoke" / "notebooks"
    executed.mkdir(parents=True)
    shutil.copy(ROOT / "paper" / "04_figures.ipynb", executed)
    publish_notebooks("smoke", tmp_path / "paper")
    assert "$\\tau" in (tmp_path / "paper" / "04_figures.html").read_text()  # math to typeset in a heading
    with SiteServer(tmp_path / "paper") as server, Chromium() as browser:
        report = browser.check_page(server.base + "04_figures.html", server.base)
    assert (report.failed_requests, report.broken_images, report.raw_math_headings) == ([], [], [])
