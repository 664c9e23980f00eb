"""Project files agree with each other: dependencies, table of contents, environment traps."""

import importlib.util
import subprocess
import sys

import tomllib
import yaml
from packaging.requirements import Requirement

from helpers.course.labs import lab_ids
from helpers.paths import REPO_ROOT


def _normalised(requirements):
    return sorted(str(Requirement(r)).lower().replace("_", "-") for r in requirements)


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    from_pyproject = project["dependencies"] + project["optional-dependencies"]["dev"]
    conda = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    assert _normalised(pip_sections[0]) == _normalised(from_pyproject)
    python = [d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python, "environment.yml names its Python"


def test_makefile_pins_torch_for_the_local_build():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "TORCH_VERSION := 2.13.0" in makefile and "torch==$(TORCH_VERSION)" in makefile


def _toc_files():
    toc = yaml.safe_load((REPO_ROOT / "toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_toc_has_every_chapter_and_lab_in_syllabus_order():
    files = _toc_files()
    chapters = sorted(p.relative_to(REPO_ROOT).with_suffix("").as_posix()
                      for p in (REPO_ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    labs = [f"labs/{lab}/{lab}" for lab in lab_ids()]
    for page in chapters + labs + ["book/intro", "book/glossary"]:
        assert files.count(page) == 1, f"{page} must appear once in toc.yml"
    assert not any(f.startswith("solutions/") for f in files), "the book shows the student versions only"
    systems = ["llama", "sam", "audiolm", "zero123"]
    order = [(systems.index(f.split("/")[1]), f) for f in files if f.startswith("chapters/")]
    assert order == sorted(order), "chapters appear system by system, in their numbered order"
    assert files.index("labs/lab0_warmup/lab0_warmup") > files.index("chapters/llama/01_rmsnorm_prenorm")


def test_no_fake_torchvision_in_the_product():
    """The test environment copes without a CPU torchvision; the product ships no stand-in for it."""
    assert not list(REPO_ROOT.glob("helpers/**/torchvision*"))
    assert not (REPO_ROOT / "torchvision").exists()
    result = subprocess.run([sys.executable, "-c", "import transformers, transformers.models.llama"],
                            capture_output=True, text=True)
    assert result.returncode == 0, "transformers must import: an installed but broken torchvision breaks it\n" + \
        result.stderr[-500:]
    if importlib.util.find_spec("torchvision") is not None:  # present: it must be a working build
        assert subprocess.run([sys.executable, "-c", "import torchvision"]).returncode == 0


def test_tests_run_offline():
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
