"""MkDocs hooks for the kneuron site (mkdocs.yml: `hooks:`).

- The figures of the results pages live beside their raw outputs under `results/`, outside
  `docs_dir`.  Rather than copying them into `docs/`, `on_files` adds every `results/**/*.png` to
  the site as `assets/results/...`, so a page links them as
  `../assets/results/compare/world/deletion_curve.png` and `mkdocs build --strict` checks those
  links like any other.
- The tutorials are notebooks, whose Markdown cells link other pages by their source
  (`../editing.md`, `smollm2.ipynb`), so that the links also work in Jupyter.  MkDocs rewrites such
  links in Markdown pages only; `on_page_content` does it for the notebooks' pages, and a link to a
  page that does not exist is a warning, which fails the strict build.
- Tables that must not drift from the code are generated: `on_page_markdown` replaces the
  placeholder `<!-- localization-methods -->` with the registered localization methods
  (`kneuron.localization`: name, the class docstring's first line, whether it needs the subject).
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"results": "assets/results"}  # repository folder -> folder in the site
PATTERNS = ("*.png",)
LINK = re.compile(r'href="(?![a-zA-Z][\w+.-]*:|#|/)([^"#?]+\.(?:md|ipynb))(#[^"]*)?"')
log = logging.getLogger("mkdocs.hooks.kneuron")
LOCALIZATION_METHODS = "<!-- localization-methods -->"


def on_files(files, config):
    for folder, dest in SOURCES.items():
        base = ROOT / folder
        for pattern in PATTERNS:
            for path in sorted(base.rglob(pattern)):
                rel = path.relative_to(base).as_posix()
                files.append(File.generated(config, f"{dest}/{rel}", abs_src_path=str(path)))
    return files


def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith(".ipynb"):
        return html

    def rewrite(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m.group(1)))
        file = files.get_file_from_path(target)
        if file is None:
            log.warning(f"Doc file '{page.file.src_uri}' contains a link '{m.group(1)}', "
                        f"but the target '{target}' is not found among documentation files.")
            return m.group(0)
        return f'href="{file.url_relative_to(page.file)}{m.group(2) or ""}"'

    return LINK.sub(rewrite, html)


def localization_table() -> str:
    """The registered localization methods as a Markdown table, in `method_names()` order."""
    from kneuron.localization import get_method, method_names

    rows = ["| method | what it scores | needs the subject |", "| --- | --- | --- |"]
    for name in method_names():
        method = get_method(name)
        summary = method.summary().replace("|", "\\|")
        rows.append(f"| `{name}` | {summary} | {'yes' if method.needs_subject else 'no'} |")
    return "\n".join(rows)


def on_page_markdown(markdown, page, config, files):
    if LOCALIZATION_METHODS in markdown:
        markdown = markdown.replace(LOCALIZATION_METHODS, localization_table())
    return markdown
