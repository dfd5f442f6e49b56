"""Atomic writes: a target is replaced whole or left as it was, and existing ones need overwrite."""

import hashlib

import pytest

from jaxprune.core.files import (
    atomic_target,
    new_target,
    sha256_file,
    write_json,
    written_directory,
)


def test_an_existing_target_is_refused_naming_the_fix_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="out exists; choose a new path or pass overwrite=True"):
        new_target(tmp_path / "out", overwrite=False, kind="path")
    assert new_target(tmp_path / "out", overwrite=True) == (tmp_path / "out").absolute()


def test_a_directory_replaces_the_old_one_whole_when_the_block_ends(tmp_path):
    target = tmp_path / "deep" / "out"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with atomic_target(target) as tmp:
        write_json(tmp / "config.json", {"a": 1})
        assert not (target / "config.json").exists()  # nothing visible before the end
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert (target / "config.json").read_text() == '{\n  "a": 1\n}\n'
    summary = written_directory(target, {"a": 1}, 3)
    assert summary == {"path": str(target), "config": {"a": 1}, "tensors": 3, "bytes": 13}


def test_a_failed_directory_write_leaves_the_old_directory_and_no_scratch(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(RuntimeError, match="boom"), atomic_target(target) as tmp:
        (tmp / "part").write_text("x")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any(target.iterdir())


def test_a_failed_file_write_leaves_the_old_file_and_no_scratch(tmp_path):
    target = tmp_path / "model.gguf"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_target(target, directory=False) as tmp:
        tmp.write_text("x")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]
    assert target.read_text() == "old"


def test_a_file_target_is_replaced_by_the_scratch_file(tmp_path):
    with atomic_target(tmp_path / "model.gguf", directory=False) as tmp:
        tmp.write_bytes(b"gguf")
    assert (tmp_path / "model.gguf").read_bytes() == b"gguf"
    assert sha256_file(tmp_path / "model.gguf") == hashlib.sha256(b"gguf").hexdigest()
