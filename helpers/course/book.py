"""Build the course's Jupyter Book offline and check that its pages load nothing from another host.

    python -m helpers.course.book build    # _build/html, then the offline check
    python -m helpers.course.book check    # only the check, on an existing build

It is also a small Sphinx extension (listed in book.yml): the "Open in Colab" badge that opens every notebook is an
image on Colab's host, so the book serves its own copy (book/_static/colab-badge.svg) in its place.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from docutils import nodes

from helpers.paths import REPO_ROOT

HTML_DIR = REPO_ROOT / "_build" / "html"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "/book/_static/colab-badge.svg"  # from the book's source folder, the repository

# A script, style sheet, font, or CSS import taken from an absolute (http, https or protocol-relative) address.
_REMOTE = r"""(?:https?:)?//[^"'\s)>]+"""
_PATTERNS = {
    "script": re.compile(rf"""<script\b[^>]*\bsrc\s*=\s*["']?({_REMOTE})""", re.I),
    "stylesheet or font link": re.compile(rf"""<link\b[^>]*\bhref\s*=\s*["']?({_REMOTE})""", re.I),
    "CSS url()": re.compile(rf"""url\(\s*["']?({_REMOTE})""", re.I),
    "CSS @import": re.compile(rf"""@import\s+["']({_REMOTE})""", re.I),
    "image": re.compile(rf"""<img\b[^>]*\bsrc\s*=\s*["']?({_REMOTE})""", re.I),
}
# <link> elements that are only hyperlinks, not loads.
_HARMLESS_LINK = re.compile(r"""\brel\s*=\s*["']?(canonical|alternate|author|license|search)\b""", re.I)


def remote_loads(html_dir: Path = HTML_DIR) -> list[str]:
    """Every place where a built page, style sheet or script would load a resource from another host."""
    found = []
    for path in sorted(html_dir.rglob("*")):
        if path.suffix not in {".html", ".css", ".js"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for what, pattern in _PATTERNS.items():
            if path.suffix == ".js" and what != "CSS @import":
                continue  # script bodies mention URLs in strings; only pages and style sheets load them
            for match in pattern.finditer(text):
                tag_start = text.rfind("<", 0, match.start() + 1)
                if what == "stylesheet or font link" and _HARMLESS_LINK.search(text[tag_start:match.end()]):
                    continue
                found.append(f"{path.relative_to(html_dir)}: {what} from {match.group(1)}")
    return found


def build(clean: bool = True) -> int:
    """Build the book into _build/html with Jupyter Book 1 (Sphinx); return the exit code."""
    jupyter_book = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    if not Path(jupyter_book).exists():
        print("jupyter-book is not installed: run `make book` (it installs the course into .venv).", file=sys.stderr)
        return 1
    if clean:
        shutil.rmtree(REPO_ROOT / "_build", ignore_errors=True)
    command = [jupyter_book, "build", str(REPO_ROOT), "--config", str(REPO_ROOT / "book.yml"),
               "--toc", str(REPO_ROOT / "toc.yml"), "--warningiserror", "--keep-going"]
    result = subprocess.run(command, cwd=REPO_ROOT)
    if result.returncode != 0:
        print("The book did not build: the warnings above say which page and line.", file=sys.stderr)
        return result.returncode
    return check()


def check(html_dir: Path = HTML_DIR) -> int:
    """Print every remote load in the built book; 0 when there is none."""
    if not (html_dir / "index.html").is_file():
        print(f"No built book in {html_dir}: run `make book` first.", file=sys.stderr)
        return 1
    loads = remote_loads(html_dir)
    for line in loads:
        print(line, file=sys.stderr)
    if loads:
        print(f"The book loads {len(loads)} resource(s) from other hosts; it must work offline.", file=sys.stderr)
        return 1
    print(f"Book built in {html_dir.relative_to(REPO_ROOT)}; it loads nothing from another host.")
    return 0


def serve_badge_locally(app: Any, doctree: nodes.document) -> None:
    """Point every Colab badge image at the book's own copy, before Sphinx collects the page's images."""
    for image in doctree.findall(nodes.image):
        if image.get("uri") == COLAB_BADGE:
            image["uri"] = LOCAL_BADGE
            image.attributes.pop("candidates", None)


def setup(app: Any) -> dict[str, bool]:
    """The Sphinx extension: runs before Sphinx's image collector (priority 500), so the copy is served."""
    app.connect("doctree-read", serve_badge_locally, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.book", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "check"])
    args = parser.parse_args(argv)
    return build() if args.command == "build" else check()


if __name__ == "__main__":
    sys.exit(main())
