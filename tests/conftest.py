"""Shared test setup: the helper modules (tiny configs, file writers, layers) are importable, and
one run shares a persistent XLA compilation cache across its workers and subprocesses."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

_CACHE = "JAX_COMPILATION_CACHE_DIR"
_OWNED_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Give the run one XLA compilation cache in a fresh temporary directory.

    Many tests compile the same programs (the tiny families' forwards, the solvers at the same
    shapes) in other modules and on other xdist workers; the cache compiles each once per run.
    The controller creates it before the workers start (they inherit the environment, as do the
    subprocess tests); a cache the caller set is left alone. Removed when the run ends, so no
    run reads another's programs.
    """
    if _CACHE not in os.environ and not hasattr(config, "workerinput"):
        os.environ[_CACHE] = tempfile.mkdtemp(prefix="jaxprune-test-xla-")
        _OWNED_CACHE.append(os.environ[_CACHE])
    if _CACHE in os.environ:
        # Every program, however small or quick to compile (the defaults skip those). No size
        # bound: with one, JAX locks the directory and re-reads every entry on each write, which
        # grows quadratic over a run's thousands of programs. Without the lock two workers may
        # write one key at once; a torn entry fails its read, which JAX reports and recompiles.
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config: pytest.Config) -> None:
    for directory in _OWNED_CACHE:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_tokenizer():
    """A small SmolLM-style byte-level BPE tokenizer (see ``helpers/llama_files.py``)."""
    from llama_files import train_tokenizer

    return train_tokenizer()
