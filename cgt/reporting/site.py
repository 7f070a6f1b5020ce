"""The results site (`make site`, MkDocs): hooks that add the generated results pages, the executed
notebooks and the figures to the hand-written pages of docs/, and serve MathJax from the site itself.

MkDocs reads only its docs/ folder; the results pages (results/*.md), the executed notebooks (paper/*.ipynb,
rendered by mkdocs-jupyter from their stored outputs, never executed) and the figures they show
(figures/*.png) live elsewhere in the repository, so `on_files` adds them at the same relative paths, and
the links between them (`../figures/x.png` from results/x.md) hold on the site as in the repository.

mkdocs.yml loads this file as a hook by its path, so it imports the package absolutely.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url

from cgt.pipeline.mathjax import copy_mathjax, script_url

SOURCES = ("results/*.md", "paper/*.ipynb", "figures/*.png", "PREREGISTRATION.md")
"""What the site takes from the repository besides docs/, as globs relative to its root (the pre-registration:
the results pages link the verdicts to it)."""

MATHJAX_DIR = "mathjax"
"""Where the site serves MathJax from, relative to the site's root."""

RESULTS_INDEX = "results/index.md"


def site_sources(root: Path) -> list[str]:
    """The repository files matching SOURCES, as sorted root-relative POSIX paths."""
    return sorted({p.relative_to(root).as_posix() for pattern in SOURCES for p in root.glob(pattern)})


def page_title(markdown: str, fallback: str) -> str:
    """The text of a page's first level-1 heading, or `fallback` when it has none."""
    match = re.search(r"^# +(.+?) *#*$", markdown, re.M)
    return match.group(1) if match else fallback


def results_index(pages: dict[str, str]) -> str:
    """The results section's index page: one link per results page ({file name: its Markdown})."""
    lines = ["# Results", ""]
    if not pages:
        lines.append("No results pages yet: `python -m cgt results` writes them after `make paper`.")
    lines += [f"* [{page_title(text, Path(name).stem)}]({name})" for name, text in sorted(pages.items())]
    return "\n".join(lines) + "\n"


def project_root(config) -> Path:
    """The repository the site is built from: the folder of its mkdocs.yml."""
    return Path(config.config_file_path).resolve().parent


@event_priority(100)  # before mkdocs-jupyter's on_files, which must see the notebooks added here
def on_files(files: Files, config) -> Files:
    root = project_root(config)
    sources = site_sources(root)
    for rel in sources:
        if files.get_file_from_path(rel) is None:
            files.append(File(rel, src_dir=str(root), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    if files.get_file_from_path(RESULTS_INDEX) is None:
        pages = {Path(rel).name: (root / rel).read_text() for rel in sources if rel.startswith("results/")}
        files.append(File.generated(config, RESULTS_INDEX, content=results_index(pages)))
    return files


def on_post_page(output: str, page, config) -> str:
    """MathJax on the Markdown pages that carry math (arithmatex's <script type="math/tex">); the
    notebooks' pages load it themselves (mkdocs-jupyter's custom_mathjax_url)."""
    if page.file.src_uri.endswith(".md") and 'type="math/tex' in output:
        folder = get_relative_url(MATHJAX_DIR, page.url or ".")
        output = output.replace("</body>", f'<script src="{script_url(folder)}"></script>\n</body>', 1)
    return output


def on_post_build(config) -> None:
    copy_mathjax(Path(config.site_dir) / MATHJAX_DIR)
