"""The method registry: lookup by name, clear errors, options."""

import numpy as np
import pytest

from jaxprune.methods import METHODS, Method, get_method, magnitude, register_method
from jaxprune.sparsity import Unstructured


def test_builtin_methods_declare_their_statistics():
    assert {"magnitude", "wanda", "sparsegpt"} <= set(METHODS)
    assert not get_method("magnitude").needs_inputs
    assert get_method("wanda").needs_inputs and not get_method("wanda").needs_hessian
    assert get_method("sparsegpt").needs_hessian
    assert dict(get_method("sparsegpt").options) == {"blocksize": 128, "percdamp": 0.01}


def test_unknown_name_lists_the_known_methods():
    with pytest.raises(ValueError, match=r"unknown pruning method 'sparsgpt'.*'sparsegpt'"):
        get_method("sparsgpt")


def test_register_refuses_to_replace_silently():
    method = Method(
        "test-magnitude", needs_hessian=False, prune=magnitude.prune, needs_inputs=False
    )
    try:
        assert register_method(method) is get_method("test-magnitude")
        with pytest.raises(ValueError, match="already registered"):
            register_method(method)
        replacement = Method("test-magnitude", False, magnitude.prune, needs_inputs=False)
        register_method(replacement, overwrite=True)
        kernel = np.arange(1.0, 9.0, dtype=np.float32).reshape(4, 2)
        _, keep = get_method("test-magnitude").prune(kernel, None, Unstructured(0.5))
        assert np.asarray(keep).sum() == 4
    finally:
        METHODS.pop("test-magnitude", None)


def test_options_resolve_against_the_defaults():
    method = get_method("sparsegpt")
    assert method.resolve_options({"blocksize": 64}) == {"blocksize": 64, "percdamp": 0.01}
    with pytest.raises(ValueError, match=r"no options \['blocksiz'\].*'blocksize'"):
        method.resolve_options({"blocksiz": 64})
    with pytest.raises(TypeError):
        method.options["blocksize"] = 1


def test_a_hessian_method_must_read_inputs():
    with pytest.raises(ValueError, match="needs inputs"):
        Method("bad", needs_hessian=True, prune=magnitude.prune, needs_inputs=False)
