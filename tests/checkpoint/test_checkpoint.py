"""Checkpoints: exact round trips, compact sparse storage, atomic saves and clear load errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pruned_trees import apply_masks, magnitude_masks, tiny_llama, two_four_mask, typed_leaves
from tiny_models import TINY_LLAMA

from jaxprune import checkpoint
from jaxprune.checkpoint import MANIFEST_NAME, load_checkpoint, save_checkpoint
from jaxprune.models import config_to_dict

CFG = TINY_LLAMA


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("compact", [False, True])
def test_round_trip_of_a_pruned_llama_is_exact(tmp_path, compact):
    model, params, masks = tiny_llama()
    recipe = {"method": "wanda", "sparsity": 0.5}
    report = {"overall_sparsity": 0.5, "layers": {"layers/0/mlp/up_proj/kernel": [0.5, 1e-3]}}
    tokenizer = b'{"version": "1.0"}'
    info = save_checkpoint(
        tmp_path / "ckpt",
        params,
        masks=masks,
        config=config_to_dict(CFG),
        recipe=recipe,
        report=report,
        extra_files={"tokenizer.json": tokenizer},
        compact=compact,
    )
    assert info["path"] == str(tmp_path / "ckpt") and info["compact"] is compact

    ck = load_checkpoint(tmp_path / "ckpt")
    assert typed_leaves(ck.params) == typed_leaves(params)
    assert typed_leaves(ck.masks) == typed_leaves(masks)
    assert list(ck.params["layers"]) == [0, 1]
    assert ck.config == config_to_dict(CFG)
    assert ck.recipe == recipe and ck.report == report
    assert ck.extra_files == {"tokenizer.json": tokenizer}
    assert ck.path == str(tmp_path / "ckpt")
    tokens = jnp.arange(12).reshape(2, 6) % CFG.vocab_size
    np.testing.assert_array_equal(model.logits(ck.params, tokens), model.logits(params, tokens))


def test_unusual_trees_keep_key_types_dtypes_and_shapes(tmp_path):
    rng = np.random.default_rng(0)
    params = {
        "a.b": jnp.asarray(rng.normal(size=(3, 5)), jnp.bfloat16),
        "a": {"b": np.float16(rng.normal(size=(2,))).reshape(2)},
        "layers": {0: {"w": np.arange(6, dtype=np.int8)}, 10: {"w": np.array(True)}},
        "3": {"x/y": jnp.asarray(2.5, jnp.bfloat16), "ü %": np.zeros((0, 4), np.float32)},
        "empty": {},
    }
    save_checkpoint(tmp_path / "c", params, config={"family": "toy"})
    ck = load_checkpoint(tmp_path / "c")
    assert typed_leaves(ck.params) == typed_leaves(params)
    assert ck.params["empty"] == {}
    assert list(ck.params) == list(params)  # insertion order is kept too
    assert ck.params["a.b"].dtype == jnp.bfloat16
    assert ck.masks is None and ck.recipe is None and ck.report is None and ck.extra_files == {}


def test_64_bit_leaves_are_not_narrowed(tmp_path):
    params = {"big": np.array([2**40, -3], np.int64), "f": np.array([1 / 3], np.float64)}
    save_checkpoint(tmp_path / "c", params, config={})
    ck = load_checkpoint(tmp_path / "c")
    assert typed_leaves(ck.params) == typed_leaves(params)


def test_masks_may_omit_unpruned_leaves_and_come_back_as_none(tmp_path):
    params = {"w": jnp.arange(8.0).reshape(2, 4), "b": jnp.ones(4)}
    keep = jnp.asarray([[True, False, True, False]] * 2)
    for compact in (False, True):
        path = tmp_path / f"c{compact}"
        save_checkpoint(
            path,
            apply_masks(params, {"w": keep, "b": None}),
            masks={"w": keep},
            config={},
            compact=compact,
        )
        ck = load_checkpoint(path)
        assert ck.masks["b"] is None
        np.testing.assert_array_equal(ck.masks["w"], keep)


# --------------------------------------------------------------------------------------------------
# Compact storage


def test_compact_restores_bit_for_bit_including_edge_masks(tmp_path):
    rng = np.random.default_rng(1)
    params = {
        "half": jnp.asarray(rng.normal(size=(16, 24)), jnp.bfloat16),
        "none_kept": jnp.zeros((5, 3), jnp.float32),
        "all_kept": jnp.asarray(rng.normal(size=(7,)), jnp.float32),
        "odd": jnp.asarray(rng.normal(size=(3, 3)), jnp.float16),
        "dense": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
    }
    masks = {
        "half": jnp.asarray(rng.random((16, 24)) < 0.5),
        "none_kept": jnp.zeros((5, 3), bool),
        "all_kept": jnp.ones((7,), bool),
        "odd": jnp.asarray(rng.random((3, 3)) < 0.5),  # 9 bits: a partly used last byte
        "dense": None,
    }
    params = apply_masks(params, masks)
    save_checkpoint(tmp_path / "c", params, masks=masks, config={}, compact=True)
    ck = load_checkpoint(tmp_path / "c")
    assert typed_leaves(ck.params) == typed_leaves(params)
    assert typed_leaves(ck.masks) == typed_leaves(masks)


def test_compact_refuses_params_that_are_not_zero_where_masked(tmp_path):
    params = {"w": jnp.ones((4, 4))}
    masks = {"w": jnp.eye(4, dtype=bool)}
    with pytest.raises(ValueError, match="nonzero values where the mask is False"):
        save_checkpoint(tmp_path / "c", params, masks=masks, config={}, compact=True)
    assert entries(tmp_path) == []
    # The dense format keeps whatever the params hold.
    save_checkpoint(tmp_path / "c", params, masks=masks, config={})
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "c").params["w"], params["w"])


def test_compact_accepts_negative_zeros_and_restores_them_as_zeros(tmp_path):
    params = {"w": jnp.asarray([[-0.0, 1.0], [2.0, -0.0]])}
    masks = {"w": jnp.asarray([[False, True], [True, False]])}
    save_checkpoint(tmp_path / "c", params, masks=masks, config={}, compact=True)
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "c").params["w"], params["w"])


def test_compact_tiny_llama_is_smaller_on_disk_than_a_dense_save(tmp_path):
    _, params, masks = tiny_llama()
    dense = save_checkpoint(tmp_path / "dense", params, config=config_to_dict(CFG))
    compact = save_checkpoint(
        tmp_path / "compact", params, masks=masks, config=config_to_dict(CFG), compact=True
    )
    raw = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    assert dense["dense_bytes"] == compact["dense_bytes"] == raw
    assert compact["bytes_on_disk"] < dense["bytes_on_disk"]
    assert compact["bytes_on_disk"] == sum(
        f.stat().st_size for f in (tmp_path / "compact").rglob("*") if f.is_file()
    )


@pytest.mark.parametrize("pattern", ["50%", "2:4"])
def test_compact_size_follows_the_kept_fraction_plus_one_bit_per_weight(tmp_path, pattern):
    rng = np.random.default_rng(2)
    params = {
        i: {"kernel": jnp.asarray(rng.normal(size=(256, 256)), jnp.float32)} for i in range(4)
    }
    if pattern == "2:4":
        masks = {i: {"kernel": jnp.asarray(two_four_mask(p["kernel"]))} for i, p in params.items()}
        assert (np.asarray(masks[0]["kernel"]).reshape(64, 4, 256).sum(axis=1) == 2).all()
    else:
        masks = magnitude_masks(params)
    params = apply_masks(params, masks)
    info = save_checkpoint(tmp_path / "c", params, masks=masks, config={}, compact=True)
    # Kept values (half the float32s) plus the bit-packed mask; zstd hardly shrinks random floats.
    expected = info["dense_bytes"] * (0.5 + 1 / 32)
    assert 0.8 * expected < info["bytes_on_disk"] < 1.05 * expected + 20_000
    np.testing.assert_array_equal(
        load_checkpoint(tmp_path / "c").params[3]["kernel"], params[3]["kernel"]
    )


# --------------------------------------------------------------------------------------------------
# Atomicity


def test_a_save_that_orbax_cannot_write_leaves_nothing_behind(tmp_path):
    params = {"ok": jnp.ones(3), "bad": np.array([object()], dtype=object)}
    with pytest.raises(Exception):  # noqa: B017 - whatever Orbax raises, it must propagate
        save_checkpoint(tmp_path / "c", params, config={})
    assert entries(tmp_path) == []


def test_a_save_failing_after_the_arrays_are_written_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(root):
        assert (root / "arrays").is_dir()  # the failure really comes after Orbax wrote its files
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint._store, "file_records", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "c", {"w": jnp.ones(3)}, config={})
    assert entries(tmp_path) == []


def test_a_failed_overwrite_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c", {"w": jnp.ones(3)}, config={"v": 1})

    def fail(root):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint._store, "file_records", fail)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "c", {"w": jnp.zeros(3)}, config={"v": 2}, overwrite=True)
    assert entries(tmp_path) == ["c"]
    ck = load_checkpoint(tmp_path / "c")
    assert ck.config == {"v": 1}
    np.testing.assert_array_equal(ck.params["w"], np.ones(3))


def test_an_existing_target_needs_overwrite(tmp_path):
    save_checkpoint(tmp_path / "c", {"w": jnp.ones(3)}, config={"v": 1})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(tmp_path / "c", {"w": jnp.zeros(3)}, config={"v": 2})
    save_checkpoint(tmp_path / "c", {"w": jnp.zeros(2)}, config={"v": 2}, overwrite=True)
    ck = load_checkpoint(tmp_path / "c")
    assert ck.config == {"v": 2}
    np.testing.assert_array_equal(ck.params["w"], np.zeros(2))
    assert entries(tmp_path) == ["c"]


def test_overwrite_refuses_to_delete_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a jaxprune checkpoint"):
        save_checkpoint(tmp_path / "c", {"w": jnp.ones(3)}, config={}, overwrite=True)
    assert (tmp_path / "c" / "precious.txt").read_text() == "keep me"


def test_the_manifest_is_the_last_file_written(tmp_path):
    save_checkpoint(tmp_path / "c", {"w": jnp.ones(3)}, config={}, extra_files={"a.txt": b"x"})
    files = [f for f in (tmp_path / "c").rglob("*") if f.is_file()]
    newest = max(files, key=lambda f: f.stat().st_mtime_ns)
    assert newest.name == MANIFEST_NAME
    listed = json.loads(newest.read_text())["files"]
    assert set(listed) == {f.relative_to(tmp_path / "c").as_posix() for f in files} - {
        MANIFEST_NAME
    }


# --------------------------------------------------------------------------------------------------
# Bad input to save


@pytest.mark.parametrize(
    "params, masks, match",
    [
        ({3: jnp.ones(2), "3": jnp.ones(2)}, None, "cannot tell apart"),
        ({(1, 2): jnp.ones(2)}, None, "keys must be str or int"),
        ({"": jnp.ones(2)}, None, "empty string key"),
        ({"w": 1.5}, None, "not an array"),
        ({"w": jnp.ones(2)}, {"w": jnp.ones(2)}, "boolean array"),
        ({"w": jnp.ones(2)}, {"w": jnp.ones(3, bool)}, "shape"),
        ({"w": jnp.ones(2)}, {"v": jnp.ones(2, bool)}, "where params has none"),
    ],
)
def test_bad_trees_are_rejected_before_anything_is_written(tmp_path, params, masks, match):
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "c", params, masks=masks, config={})
    assert entries(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"config": {"f": object()}}, "config must be JSON-serialisable"),
        ({"config": [1]}, "config must be a dict"),
        ({"config": {}, "extra_files": {"../x": b""}}, "plain file name"),
        ({"config": {}, "extra_files": {"x": "text"}}, "must be bytes"),
    ],
)
def test_bad_metadata_is_rejected(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "c", {"w": jnp.ones(2)}, **kwargs)
    assert entries(tmp_path) == []


def test_numpy_scalars_in_a_report_are_stored_as_numbers(tmp_path):
    save_checkpoint(tmp_path / "c", {"w": jnp.ones(2)}, config={}, report={"s": np.float32(0.5)})
    assert load_checkpoint(tmp_path / "c").report == {"s": 0.5}


# --------------------------------------------------------------------------------------------------
# Load errors


@pytest.fixture
def saved(tmp_path):
    _, params, masks = tiny_llama()
    save_checkpoint(tmp_path / "c", params, masks=masks, config=config_to_dict(CFG), compact=True)
    return tmp_path / "c"


def largest_array_file(path: Path) -> Path:
    return max((path / "arrays").rglob("*"), key=lambda f: f.stat().st_size if f.is_file() else -1)


def edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    edit(manifest)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_loading_a_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_loading_a_file_says_a_checkpoint_is_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_checkpoint(tmp_path / "f")


def test_a_directory_without_manifest_is_reported_as_partial_or_foreign(saved):
    (saved / MANIFEST_NAME).unlink()
    with pytest.raises(ValueError, match=f"{saved}.*no {MANIFEST_NAME}.*save the checkpoint again"):
        load_checkpoint(saved)


def test_an_unknown_format_version_is_rejected(saved):
    edit_manifest(saved, lambda m: m.update(format_version=99))
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(saved)


def test_a_manifest_missing_fields_is_rejected(saved):
    edit_manifest(saved, lambda m: m.pop("leaves"))
    with pytest.raises(ValueError, match=r"incomplete \(missing \['leaves'\]\)"):
        load_checkpoint(saved)


def test_a_garbled_manifest_is_rejected(saved):
    (saved / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(saved)


def test_a_deleted_array_file_is_reported(saved):
    victim = largest_array_file(saved)
    victim.unlink()
    with pytest.raises(ValueError, match=f"corrupted: .*{victim.name} .*is missing"):
        load_checkpoint(saved)


def test_a_truncated_array_file_is_reported(saved):
    victim = largest_array_file(saved)
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"corrupted: .*{victim.name} has .* bytes"):
        load_checkpoint(saved)


def test_a_flipped_byte_is_caught_by_the_checksum(saved):
    victim = largest_array_file(saved)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(saved)


def test_a_missing_json_document_is_reported(saved):
    (saved / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json listed in its manifest is missing"):
        load_checkpoint(saved)


@pytest.mark.parametrize(
    "field, value, match",
    [("shape", [64, 33], r"manifest says \(64, 33\)"), ("dtype", "bfloat16", "manifest says")],
)
def test_a_manifest_disagreeing_with_the_stored_arrays_is_rejected(saved, field, value, match):
    def edit(manifest):
        leaf = next(r for r in manifest["leaves"] if r["path"] == ["embed_tokens", "embedding"])
        leaf[field] = value
        leaf["size"] = int(np.prod(leaf["shape"]))

    edit_manifest(saved, edit)
    with pytest.raises(ValueError, match=f"inconsistent.*embed_tokens/embedding.*{match}"):
        load_checkpoint(saved)


def test_a_packed_mask_disagreeing_with_the_kept_count_is_rejected(saved):
    # Damage that checksums cannot see (a writer bug, not bit rot): re-save the arrays through Orbax
    # with one mask bit flipped and refresh the manifest's file records.
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as orbax_checkpointer:
        tree = orbax_checkpointer.restore(saved / "arrays")
        bits = np.array(tree["mask_bits"])
        bits[0] ^= 1  # a bit of the first pruned leaf
        tree["mask_bits"] = bits
        shutil.rmtree(saved / "arrays")
        orbax_checkpointer.save(saved / "arrays", tree)
    records = checkpoint._files.file_records(saved)
    del records[MANIFEST_NAME]
    edit_manifest(saved, lambda m: m.update(files=records))
    with pytest.raises(ValueError, match="packed mask of layers/0/mlp/down_proj/kernel keeps"):
        load_checkpoint(saved)
