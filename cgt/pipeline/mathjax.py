"""The math renderer of every published page, served from beside the page: no CDN, so the LaTeX in the
notebooks' headings and narration renders offline.

The files are MathJax 2 as shipped by the pinned PyPI package `jupyter-server-mathjax` (the same MathJax
major version nbconvert's templates configure). `copy_mathjax(dest)` copies the part the pages use — the
loader, the TeX input, the HTML-CSS output with its STIX web fonts, the extensions — and writes one local
configuration file that points HTML-CSS at the fonts that are shipped (its default, the TeX web fonts, is
not in the package, and asking for it would be a failed request on every page). It also turns off the
hidden MathML copy for screen readers by default (a reader can turn it on in MathJax's context menu): its
styles ask for TeX fonts the package does not ship either.

    copy_mathjax(Path("paper/mathjax"))
    url = script_url("mathjax")   # <script src=url> in a page beside that folder
"""
from __future__ import annotations

import shutil
from pathlib import Path

COMBINED_CONFIG = "TeX-AMS-MML_HTMLorMML-full"
"""The package's one combined configuration: TeX and MathML input, HTML-CSS output, the common extensions."""

LOCAL_CONFIG = "local/cgt"
"""Our configuration file (config/local/cgt.js in the copy), loaded after the combined one."""

LOCAL_CONFIG_JS = """\
MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true}},
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  menuSettings: {assistiveMML: false},
  messageStyle: "none"
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/cgt.js");
"""

UNUSED = ("jax/output/SVG", "extensions/a11y")
"""Parts of the package no page loads: the SVG output (the pages use HTML-CSS) and the screen-reader
explorer (loaded only from MathJax's context menu). Of the translations of MathJax's own menus and
messages, only English is kept."""


def mathjax_source() -> Path:
    """The MathJax tree inside the installed jupyter-server-mathjax package; a clear error when it is missing."""
    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise ImportError("the published pages need MathJax from the package jupyter-server-mathjax: "
                          "install the project's dev dependencies (`pip install -e '.[dev]'`)") from err
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def copy_mathjax(dest: str | Path, source: Path | None = None) -> Path:
    """Copy the used part of MathJax (everything but `UNUSED`) to `dest`, replacing what was there, and
    write the local configuration file. Returns `dest`. The copy is made beside `dest` and moved into
    place, so an interrupted copy never leaves a half folder there."""
    source, dest = Path(source or mathjax_source()), Path(dest)
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    skip = {source / part for part in UNUSED}
    skip |= {lang for lang in (source / "localization").iterdir() if lang.name != "en"}
    shutil.copytree(source, staging, ignore=lambda folder, names: [n for n in names if Path(folder, n) in skip])
    config = staging / "config" / f"{LOCAL_CONFIG}.js"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(LOCAL_CONFIG_JS)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


def script_url(folder: str) -> str:
    """The src of MathJax's <script> in a page for which `folder` is the relative path of the copy."""
    return f"{folder.rstrip('/')}/MathJax.js?config={COMBINED_CONFIG},Safe,{LOCAL_CONFIG}"
