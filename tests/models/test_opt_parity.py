"""The OPT family against transformers' PyTorch implementation on tiny random models."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxprune.models import LanguageModel, config_from_dict, config_to_dict, family_of, opt

TINY = dict(
    vocab_size=64,
    hidden_size=16,
    ffn_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=32,
)
VARIANTS = {
    "pre_ln": {},
    "post_ln": {"do_layer_norm_before": False},
    "projected": {"word_embed_proj_dim": 8},
    "opt350m_like": {"do_layer_norm_before": False, "word_embed_proj_dim": 24},
    "no_final_norm": {"_remove_final_layer_norm": True},
    "bare_untied": {
        "enable_bias": False,
        "layer_norm_elementwise_affine": False,
        "tie_word_embeddings": False,
    },
}


def torch_opt(**overrides) -> transformers.OPTForCausalLM:
    """A tiny OPT whose every parameter (biases, norms included) is far from its init value."""
    hf_config = transformers.OPTConfig(
        **{**TINY, **overrides}, dropout=0.0, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(hf_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def convert(model: transformers.OPTForCausalLM) -> tuple[opt.OPTConfig, dict]:
    config = opt.OPTConfig.from_dict(model.config.to_dict())
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return config, opt.params_from_hf_tensors(tensors, config)


def tokens(seq: int = 11) -> np.ndarray:
    return np.random.default_rng(1).integers(0, TINY["vocab_size"], size=(3, seq))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_transformers(variant):
    torch_model = torch_opt(**VARIANTS[variant])
    config, params = convert(torch_model)
    ids = tokens()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(ids)).logits.numpy()
    model = LanguageModel(config)
    got = jax.jit(model.logits)(params, jnp.asarray(ids))
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", ["pre_ln", "post_ln", "opt350m_like"])
def test_block_taps_are_inputs_of_torch_linears(variant):
    torch_model = torch_opt(**VARIANTS[variant])
    config, params = convert(torch_model)
    seen: dict[str, np.ndarray] = {}

    def keep_input(name):
        return lambda module, args, out: seen.__setitem__(name, args[0].detach().numpy())

    def keep_output(name):
        return lambda module, args, out: seen.__setitem__(name, out.detach().numpy())

    layers = torch_model.model.decoder.layers
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(
            lambda module, args, i=i: seen.__setitem__(f"{i}/in", args[0].detach().numpy())
        )
        layer.register_forward_hook(keep_output(f"{i}/out"))
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            getattr(layer.self_attn, name).register_forward_hook(keep_input(f"{i}/{name}"))
        layer.fc1.register_forward_hook(keep_input(f"{i}/fc1"))
        layer.fc2.register_forward_hook(keep_input(f"{i}/fc2"))
    ids = tokens()
    with torch.no_grad():
        torch_model(torch.from_numpy(ids))

    model = LanguageModel(config)
    hidden = model.embed(params, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(hidden), seen["0/in"], atol=1e-5, rtol=0)
    for i in range(len(layers)):
        out, taps = model.block(model.block_params(params, i), hidden, capture=True)
        assert set(taps) == {tap for tap, _ in opt.SEQUENTIAL_GROUPS}
        for tap, linears in opt.SEQUENTIAL_GROUPS:
            for linear in linears:
                # torch flattens (batch, seq) before the MLP; compare row by row.
                want = seen[f"{i}/{linear.split('/')[-1]}"]
                got = np.asarray(taps[tap]).reshape(want.shape)
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=linear)
        np.testing.assert_allclose(np.asarray(out), seen[f"{i}/out"], atol=1e-5, rtol=0)
        assert np.array_equal(np.asarray(model.block(model.block_params(params, i), hidden)), out)
        hidden = out


def test_params_have_the_layout_of_init_params():
    config, params = convert(torch_opt(**VARIANTS["opt350m_like"]))
    fresh = LanguageModel(config).init_params()
    assert jax.tree.structure(params) == jax.tree.structure(fresh)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, fresh)
    assert sorted(params["layers"]) == [0, 1]


def test_conversion_accepts_every_hf_prefix():
    torch_model = torch_opt()
    config, reference = convert(torch_model)
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    assert all(k.startswith("model.decoder.") or k == "lm_head.weight" for k in state)
    for prefix in ("decoder.", ""):  # OPTModel checkpoints (facebook/opt-*) and bare names
        renamed = {k.replace("model.decoder.", prefix): v for k, v in state.items()}
        converted = opt.params_from_hf_tensors(renamed, config)
        assert jax.tree.all(jax.tree.map(np.array_equal, converted, reference))


def test_kernels_are_transposed_torch_weights():
    torch_model = torch_opt(**VARIANTS["projected"])
    _, params = convert(torch_model)
    decoder = torch_model.model.decoder
    fc1 = decoder.layers[1].fc1.weight.detach().numpy()
    np.testing.assert_array_equal(params["layers"][1]["fc1"]["kernel"], fc1.T)
    project_in = decoder.project_in.weight.detach().numpy()
    np.testing.assert_array_equal(params["project_in"]["kernel"], project_in.T)


def test_conversion_can_cast():
    config, _ = convert(torch_opt())
    state = {k: v.detach().numpy() for k, v in torch_opt().state_dict().items()}
    params = opt.params_from_hf_tensors(state, config, dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}


def test_missing_tensors_are_named():
    torch_model = torch_opt()
    config, _ = convert(torch_model)
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    del state["model.decoder.layers.1.fc2.bias"]
    del state["model.decoder.final_layer_norm.weight"]
    with pytest.raises(ValueError, match=r"lacks 2 tensor.*final_layer_norm\.weight.*1\.fc2\.bias"):
        opt.params_from_hf_tensors(state, config)


def test_untied_head_needs_lm_head():
    torch_model = torch_opt(**VARIANTS["bare_untied"])
    config, _ = convert(torch_model)
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    del state["lm_head.weight"]
    with pytest.raises(ValueError, match=r"lm_head\.weight"):
        opt.params_from_hf_tensors(state, config)


def test_shape_mismatch_is_reported():
    torch_model = torch_opt()
    config, _ = convert(torch_model)
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    wrong = opt.OPTConfig.from_dict({**config.to_dict(), "ffn_dim": 48})
    with pytest.raises(ValueError, match=r"layers\.0\.fc1\.bias.*\(32,\).*\(48,\)"):
        opt.params_from_hf_tensors(state, wrong)


def test_config_from_hf_dict_and_round_trip():
    hf = transformers.OPTConfig(**TINY, word_embed_proj_dim=8, eos_token_id=[2, 5]).to_dict()
    config = opt.OPTConfig.from_dict(hf)  # ignores the many HF-only keys
    assert config.word_embed_proj_dim == 8 and config.ffn_dim == 32
    assert config.eos_token_id == 2 and config.tie_word_embeddings
    assert opt.OPTConfig.from_dict(config.to_dict()) == config
    assert config_from_dict(config_to_dict(config)) == config
    assert config_from_dict(hf) == config
    assert family_of(config).name == "opt"
    assert opt.OPTConfig(hidden_size=32, num_attention_heads=4).word_embed_proj_dim == 32


def test_config_rejects_unsupported_settings():
    with pytest.raises(ValueError, match="activation_function='gelu'"):
        opt.OPTConfig.from_dict({**TINY, "activation_function": "gelu"})
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        opt.OPTConfig(hidden_size=18, num_attention_heads=4)


def test_default_targets_are_exactly_the_block_linears():
    config = opt.OPTConfig(**TINY, word_embed_proj_dim=8, tie_word_embeddings=False)
    params = LanguageModel(config).init_params()
    paths = [
        "/".join(str(k.key) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    pruned = {p for p in paths if re.fullmatch(family_of(config).default_targets, p)}
    linears = [name for _, names in opt.SEQUENTIAL_GROUPS for name in names]
    assert pruned == {f"layers/{i}/{name}/kernel" for i in range(2) for name in linears}


def test_too_long_sequence_is_rejected():
    config = opt.OPTConfig(**TINY)
    model = LanguageModel(config)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=32"):
        model.logits(model.init_params(), jnp.zeros((1, 33), jnp.int32))


@pytest.mark.parametrize("variant", ["opt350m_like", "bare_untied"])
def test_save_pretrained_directory_loads_through_hf_loader(tmp_path, variant):
    from jaxprune.models.loaders.hf import load_hf_checkpoint

    torch_model = torch_opt(**VARIANTS[variant])
    torch_model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_hf_checkpoint(tmp_path)
    assert loaded.model.config == opt.OPTConfig.from_dict(torch_model.config.to_dict())
    ids = tokens()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(ids)).logits.numpy()
    got = loaded.model.logits(loaded.params, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=0)
