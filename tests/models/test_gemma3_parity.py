"""Gemma 3 in jaxprune gives the logits transformers' PyTorch ``Gemma3ForCausalLM`` gives.

Tiny random models, a sequence longer than the sliding window, and every Gemma-specific feature
switched to a value where dropping it would show (head size not width/heads, a query scale not the
head size, both RoPE bases, linear RoPE scaling, logit soft-capping, untied heads, bfloat16).
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Gemma3ForCausalLM as HFGemma3ForCausalLM
from transformers import Gemma3TextConfig

from jaxprune.models import Gemma3Config, LanguageModel
from jaxprune.models.gemma3 import config_from_hf, params_from_hf
from jaxprune.models.loaders import load_pretrained
from jaxprune.models.loaders.hf import load_hf_checkpoint

WINDOW, SEQ = 8, 40  # the sequence is five windows long
BASE = dict(
    vocab_size=128,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=24,
    sliding_window=WINDOW,
    layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
        "full_attention": {"rope_type": "default", "rope_theta": 5000.0},
    },
)
CASES = {
    "tied": {},
    "one_kv_head": dict(num_key_value_heads=1),
    "untied": dict(tie_word_embeddings=False),
    "linear_rope_scaling": dict(
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 5000.0},
        }
    ),
    "final_softcapping": dict(final_logit_softcapping=3.0),
}


def hf_gemma3(seed: int = 0, **overrides) -> HFGemma3ForCausalLM:
    config = Gemma3TextConfig(**{**BASE, **overrides})
    config._attn_implementation = "eager"
    model = HFGemma3ForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # O(1) logits and non-trivial (1 + w) norm scales
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(0.3 * noise if name.endswith("norm.weight") else noise / p.shape[1] ** 0.5)
    return model.eval()


def tokens(vocab: int, seed: int = 0, length: int = SEQ) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(2, length))


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(ids)).logits.float().numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_pytorch_beyond_the_sliding_window(tmp_path, case):
    model = hf_gemma3(**CASES[case])
    model.save_pretrained(tmp_path)
    ids = tokens(BASE["vocab_size"])
    expected = torch_logits(model, ids)
    assert expected.std() > 0.5
    loaded = load_pretrained(tmp_path)
    assert loaded.model.config.family == "gemma3"
    got = np.asarray(loaded.model.logits(loaded.params, jnp.asarray(ids)))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_config_is_read_from_the_checkpoint(tmp_path):
    hf_gemma3(**CASES["linear_rope_scaling"]).save_pretrained(tmp_path)
    c = load_hf_checkpoint(tmp_path).model.config
    assert (c.hidden_size, c.intermediate_size, c.head_dim) == (48, 96, 16)
    assert (c.num_attention_heads, c.num_key_value_heads) == (4, 2)
    assert (c.rope_theta, c.rope_local_base_freq, c.rope_scaling_factor) == (5000.0, 100.0, 8.0)
    assert (c.sliding_window, c.query_pre_attn_scalar) == (WINDOW, 24)
    assert c.layer_types == tuple(BASE["layer_types"])


def test_the_window_and_the_two_rope_bases_matter(tmp_path):
    """Treating every block alike (all sliding, all global) is far from torch's logits."""
    model = hf_gemma3(seed=1)
    model.save_pretrained(tmp_path)
    loaded = load_hf_checkpoint(tmp_path)
    ids = tokens(BASE["vocab_size"], seed=1)
    expected = torch_logits(model, ids)
    c = loaded.model.config
    for kind in ("sliding_attention", "full_attention"):
        alike = Gemma3Config.from_dict({**c.to_dict(), "layer_types": [kind] * 4})
        got = np.asarray(LanguageModel(alike).logits(loaded.params, jnp.asarray(ids)))
        assert np.abs(got - expected).max() > 1e-2, kind


def test_blocks_with_a_traced_index_match_the_whole_model(tmp_path):
    """The engine runs blocks one at a time with a traced index (one compile for all blocks)."""
    model = hf_gemma3(seed=2)
    model.save_pretrained(tmp_path)
    loaded = load_hf_checkpoint(tmp_path)
    lm, params = loaded.model, loaded.params
    ids = tokens(BASE["vocab_size"], seed=2)
    step = jax.jit(lambda bp, h, i: lm.block(bp, h, capture=True, index=i))
    hidden = lm.embed(params, jnp.asarray(ids))
    with torch.no_grad():
        states = model(torch.as_tensor(ids), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(np.asarray(hidden), states[0].numpy(), atol=1e-5, rtol=0)
    for i in range(lm.num_blocks):
        hidden, taps = step(lm.block_params(params, i), hidden, i)
        assert set(taps) == {"attn_in", "o_in", "mlp_in", "down_in"}
    np.testing.assert_allclose(
        np.asarray(lm.head(params, hidden)), torch_logits(model, ids), atol=1e-4
    )
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match="pass the block's index"):
        lm.block(lm.block_params(params, 0), hidden)


def test_bfloat16_checkpoint_loads(tmp_path):
    model = hf_gemma3(seed=3)
    with torch.no_grad():  # bf16-representable weights: the bf16 file loses nothing
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path)
    ids = tokens(BASE["vocab_size"], seed=3)
    loaded = load_hf_checkpoint(tmp_path)
    got = np.asarray(loaded.model.logits(loaded.params, jnp.asarray(ids)))
    np.testing.assert_allclose(got, torch_logits(model, ids), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_activation": "silu"}, "hidden_activation 'silu'"),
        ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ],
)
def test_unsupported_configs_are_clear_errors(change, message):
    d = hf_gemma3().config.to_dict()
    with pytest.raises(ValueError, match=message):
        config_from_hf({**d, **change})


def test_mismatched_tensors_are_named():
    model = hf_gemma3()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    config = config_from_hf(model.config.to_dict())
    del state["model.layers.1.self_attn.q_norm.weight"]
    state["model.layers.0.extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match="missing model.layers.1.self_attn.q_norm.weight; "):
        params_from_hf(state, config)
