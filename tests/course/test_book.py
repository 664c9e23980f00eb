"""The book builds offline from the committed notebooks, and its pages load nothing from another host."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from helpers.course.book import remote_loads
from helpers.paths import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"


def test_remote_load_detector_finds_each_kind(tmp_path):
    (tmp_path / "page.html").write_text(
        '<script src="https://cdn.example.org/x.js"></script>\n'
        '<link rel="stylesheet" href="//fonts.example.org/css">\n'
        '<style>@font-face { src: url("https://fonts.example.org/f.woff2"); }</style>\n'
        '<link rel="canonical" href="https://example.org/page.html">\n'  # a hyperlink, not a load
        '<script src="_static/local.js"></script><a href="https://example.org">a link</a>\n'
        '<img alt="Open In Colab" src="https://colab.research.google.com/assets/colab-badge.svg"/>\n'
        '<img src="../_images/local.svg"/>\n'
    )
    (tmp_path / "style.css").write_text('@import "https://example.org/more.css";')
    found = remote_loads(tmp_path)
    assert len(found) == 5, found
    assert {line.split(": ")[1].split(" from")[0] for line in found} == {
        "script", "stylesheet or font link", "CSS url()", "CSS @import", "image"}


def _network_isolated() -> list[str]:
    """Run the build with no network at all where this machine allows it (a new network namespace)."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.fixture(scope="module")
def built_book():
    result = subprocess.run([*_network_isolated(), sys.executable, "-m", "helpers.course.book", "build"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return HTML


@pytest.mark.slow
def test_book_builds_with_no_network_and_loads_nothing_remote(built_book):
    assert remote_loads(built_book) == []
    page = (built_book / "chapters/llama/01_rmsnorm_prenorm.html").read_text()
    assert 'src="../../_static/mathjax/tex-chtml.js"' in page
    assert (built_book / "_static/mathjax/tex-chtml.js").is_file()
    assert (built_book / "_static/mathjax/output/chtml/fonts/woff-v2").is_dir(), "MathJax fonts ship with the book"
    assert 'alt="Open In Colab" src="../../_images/colab-badge.svg"' in page, "the Colab badge is served with the book"
    served = (built_book / "_images/colab-badge.svg").read_bytes()
    assert served == (REPO_ROOT / "book/_static/colab-badge.svg").read_bytes()


@pytest.mark.slow
def test_book_has_every_page_of_the_toc_in_order(built_book):
    toc = yaml.safe_load((REPO_ROOT / "toc.yml").read_text())
    pages = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for page in pages:
        assert (built_book / f"{page}.html").is_file(), f"{page} was not built"
    landing = (built_book / "book/intro.html").read_text()
    navigation = landing[landing.index("bd-docs-nav"):]
    navigation = navigation[:navigation.index("</nav>")]
    links = [f'href="{os.path.relpath(page, "book")}.html"' for page in pages]
    positions = [navigation.find(link) for link in links]
    assert all(p > 0 for p in positions) and positions == sorted(positions), "the navigation follows toc.yml"
    assert not (built_book / "solutions").exists(), "instructor versions stay out of the book"


@pytest.mark.slow
def test_landing_page_explains_the_course(built_book):
    text = re.sub(r"<[^>]+>", "", (built_book / "book/intro.html").read_text())
    for needle in ("单模态通用大模型", "Syllabus", "student", "teacher", "make book", "make test", "make grade",
                   "COURSE_PROFILE", "Colab", "LLaMA", "SAM", "AudioLM", "Zero-1-to-3"):
        assert needle in text, f"the landing page does not mention {needle!r}"


@pytest.mark.slow
def test_glossary_pairs_chinese_and_english_terms(built_book):
    text = (built_book / "book/glossary.html").read_text()
    for zh, en in [("预先归一化", "Pre-normalization"), ("旋转位置编码", "Rotary position embedding"),
                   ("分组查询注意力", "Grouped-query attention"), ("提示编码器", "Prompt encoder"),
                   ("掩码解码器", "Mask decoder"), ("残差矢量量化", "Residual vector quantization"),
                   ("隐空间扩散模型", "Latent diffusion model"), ("非极大值抑制", "Non-maximum suppression")]:
        assert zh in text and en.lower() in text.lower(), f"the glossary lacks {en} ({zh})"


@pytest.mark.slow
def test_lab_pages_show_the_student_version(built_book):
    text = (built_book / "labs/lab0_warmup/lab0_warmup.html").read_text()
    assert "NotImplementedError" in text and "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
