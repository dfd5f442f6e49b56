"""A Hugging Face checkpoint read by slices: each process reads only what its devices hold.

:func:`load_sliced` places every parameter straight onto a mesh with
:func:`jax.make_array_from_callback`; the callback reads the block a device needs from the
safetensors file (``safe_open(...).get_slice(name)[rows, cols]``), so in a multi-process run a
host's memory holds its own devices' shards only, never a whole tensor.

The family's converter (``Family.hf.params_from_hf``) is not rewritten here: it is traced once on
abstract tensors (:func:`jax.make_jaxpr`), which shows for every parameter the checkpoint tensor it
comes from and whether it is transposed. A family whose converter does more than rename,
transpose and cast (concatenating or permuting tensors) is refused with a clear error; such a
model loads whole with :func:`jaxprune.models.loaders.load_pretrained`. The one combination read by
slices is a stacked expert kernel (``HfSpec.stacked``): each device reads only its experts'
tensors, expert by expert.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxprune.core.paths import leaf_paths
from jaxprune.models.base import LanguageModel, family_for_model_type
from jaxprune.models.loaders.pretrained import Pretrained
from jaxprune.models.tokenizer import Tokenizer
from jaxprune.sharding import Layout

_PASS_THROUGH = ("convert_element_type", "copy", "copy_p")
# safetensors' dtype names -> NumPy/JAX names
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "BOOL": "bool"}
_DTYPES |= {f"I{n}": f"int{n}" for n in (8, 16, 32, 64)} | {f"U{n}": f"uint{n}" for n in (8, 16)}


def tensor_files(directory: Path) -> dict[str, Path]:
    """Checkpoint tensor name -> the safetensors file holding it (single file or sharded)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    from safetensors import safe_open

    single = directory / "model.safetensors"
    if not single.is_file():
        raise ValueError(f"{directory} holds no model.safetensors(.index.json) to read slices of")
    with safe_open(single, framework="flax") as f:
        return dict.fromkeys(f.keys(), single)


def _abstract_tensors(files: dict[str, Path]) -> dict[str, jax.ShapeDtypeStruct]:
    from safetensors import safe_open

    out = {}
    for file in sorted(set(files.values())):
        with safe_open(file, framework="flax") as f:
            for name in f.keys():
                piece = f.get_slice(name)
                dtype = jnp.dtype(_DTYPES.get(piece.get_dtype(), piece.get_dtype().lower()))
                out[name] = jax.ShapeDtypeStruct(tuple(piece.get_shape()), dtype)
    return out


def _sources(config: Any, family: Any, tensors: dict, dtype: Any) -> tuple[dict, Any]:
    """Param path -> (checkpoint tensor, transposed), read off the traced converter."""
    names = list(tensors)
    jaxpr, shapes = jax.make_jaxpr(
        lambda *arrays: family.hf.params_from_hf(
            dict(zip(names, arrays, strict=True)), config, dtype
        ),
        return_shape=True,
    )(*tensors.values())
    origin = {var: (name, False) for var, name in zip(jaxpr.jaxpr.invars, names, strict=True)}
    for eqn in jaxpr.jaxpr.eqns:
        (source,) = eqn.invars if len(eqn.invars) == 1 else (None,)
        if source not in origin:
            continue
        name, transposed = origin[source]
        if eqn.primitive.name == "transpose" and eqn.params["permutation"] == (1, 0):
            origin[eqn.outvars[0]] = (name, not transposed)
        elif eqn.primitive.name in _PASS_THROUGH:
            origin[eqn.outvars[0]] = (name, transposed)
    sources = {}
    stacked = family.hf.stacked(config) if family.hf.stacked else {}
    for path, var in zip(leaf_paths(shapes), jaxpr.jaxpr.outvars, strict=True):
        if path in stacked:  # one (out, in) tensor per expert: read expert by expert
            sources[path] = (stacked[path], True)
        elif var not in origin:
            raise ValueError(
                f"{family.name}'s converter builds {path} from more than one renamed or "
                "transposed tensor, so it cannot be read by slices; load the model whole"
            )
        else:
            sources[path] = origin[var]
    return sources, shapes


def _reader(file: Path, name: str, transposed: bool, dtype: Any):
    from safetensors import safe_open

    def read(index: tuple[slice, ...]) -> np.ndarray:
        wanted = index[::-1] if transposed else index
        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            with safe_open(file, framework="flax") as f:
                block = np.asarray(f.get_slice(name)[wanted])
        return (block.T if transposed else block).astype(dtype)

    return read


def _stacked_reader(files: dict[str, Path], names: tuple[str, ...], dtype: Any):
    """Reads an ``(experts, in, out)`` block of a kernel stacked from per-expert ``(out, in)``
    tensors, opening only the experts in the block."""
    experts = [_reader(files[name], name, True, dtype) for name in names]

    def read(index: tuple[slice, ...]) -> np.ndarray:
        chosen = range(len(names))[index[0]]
        return np.stack([experts[e](index[1:]) for e in chosen]).astype(dtype)

    return read


def load_sliced(directory: str | os.PathLike, mesh: Mesh, dtype: Any = jnp.float32) -> Pretrained:
    """A Hugging Face checkpoint's params placed on ``mesh`` by its family's partition rules,
    each process reading only the slices its devices hold.

    Raises:
      ValueError: no config or safetensors, an unknown ``model_type``, or a family whose
        converter combines tensors (see the module docstring).
    """
    directory = Path(directory)
    hf_config = json.loads((directory / "config.json").read_text())
    family = family_for_model_type(hf_config.get("model_type"))
    config = family.hf.config_from_hf(hf_config)
    files = tensor_files(directory)
    sources, shapes = _sources(config, family, _abstract_tensors(files), dtype)
    layout = Layout(mesh, family.partition_rules)

    def reader(path: str, dtype: Any):
        name, transposed = sources[path]
        if isinstance(name, tuple):
            return _stacked_reader(files, name, dtype)
        return _reader(files[name], name, transposed, dtype)

    leaves = [
        jax.make_array_from_callback(
            shape.shape, layout.sharding(path, shape.shape), reader(path, shape.dtype)
        )
        for path, shape in zip(leaf_paths(shapes), jax.tree.leaves(shapes), strict=True)
    ]
    params = jax.tree.unflatten(jax.tree.structure(shapes), leaves)
    tokenizer = Tokenizer.from_directory(directory) if Tokenizer.in_directory(directory) else None
    return Pretrained(LanguageModel(config, dtype=dtype), params, tokenizer, str(directory))


__all__ = ["load_sliced", "tensor_files"]
