"""`jaxprune plan` on mixture-of-experts configs: parameter counts of published models, and the
per-expert forward and statistics steps against XLA's own accounting (within 15%)."""

import json

import jax
import jax.numpy as jnp
import pytest

from jaxprune import footprint
from jaxprune.cli import main
from jaxprune.engine import calibrate
from jaxprune.engine import experts as engine_experts
from jaxprune.methods import statistics
from jaxprune.models import LanguageModel, MixtralConfig

# Published config.json shapes and parameter counts (Hugging Face hub model cards).
MIXTRAL_8X7B = {
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
}
QWEN3_30B_A3B = {
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "vocab_size": 151936,
    "num_experts": 128,
    "num_experts_per_tok": 8,
}


def _close(formula: float, measured: int) -> None:
    assert abs(formula - measured) <= 0.15 * measured, (formula, measured)


@pytest.mark.parametrize(("config", "count"), [(MIXTRAL_8X7B, 46.70e9), (QWEN3_30B_A3B, 30.53e9)])
def test_moe_shapes_count_the_published_parameters(config, count):
    shapes = footprint.Shapes.from_hf_config(config)
    assert shapes.experts == config.get("num_experts", config.get("num_local_experts"))
    assert shapes.params == pytest.approx(count, rel=2e-3)


def _tiny(d, f, experts):
    config = MixtralConfig(
        vocab_size=64,
        hidden_size=d,
        intermediate_size=f,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=experts,
        num_experts_per_tok=2,
    )
    model = LanguageModel(config)
    block = jax.eval_shape(lambda: model.block_params(model.init_params(0), 0))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), block)
    return model, zeros, footprint.Shapes(d, f, 1, 4, 2, d // 4, 64, experts=experts)


@pytest.mark.parametrize(
    ("d", "f", "experts", "windows", "seqlen"),
    [(128, 96, 8, 4, 64), pytest.param(64, 256, 4, 4, 64, marks=pytest.mark.slow)],
)
def test_moe_forward_and_statistics_steps_match_xla(d, f, experts, windows, seqlen):
    model, block, shapes = _tiny(d, f, experts)
    taps = tuple(tap for tap, _ in model.family.sequential_groups)
    hidden = jnp.ones((windows, seqlen, d))
    m = (
        calibrate._forward_step.lower(
            model, block, hidden, 0, taps=taps, with_output=True, batch=None
        )
        .compile()
        .memory_analysis()
    )
    measured = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    _close(footprint.forward_step(shapes, windows, seqlen, 4), measured)
    _, captured = jax.eval_shape(lambda b, h: model.block(b, h, capture=True), block, hidden)
    routed = ("experts_in", "experts_down_in")
    inputs = {t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), captured[t]) for t in routed}
    kernels = {"experts_in": (experts, d, f), "experts_down_in": (experts, f, d)}
    stats = {t: engine_experts.init_stats(statistics.HESSIAN, kernels[t]) for t in routed}
    m = (
        calibrate._statistics_step.lower(
            inputs,
            stats,
            {},
            statistic=statistics.HESSIAN,
            stat_taps=routed,
            error_taps=(),
            collect_taps=(),
            replicated=None,
        )
        .compile()
        .memory_analysis()
    )
    _close(footprint.statistics(shapes.taps[2:], True), m.output_size_in_bytes)
    _close(footprint.masked_inputs(shapes, windows, seqlen), m.temp_size_in_bytes)


def test_plan_reads_a_moe_config(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_30B_A3B))
    argv = ["plan", "--model", str(tmp_path), "--method", "sparsegpt", "--mesh", "1x8"]
    assert main([*argv, "--device-memory", "141GB", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    shapes = footprint.Shapes.from_hf_config(QWEN3_30B_A3B)
    assert report["params"] == shapes.params
    # 128 experts' Hessians of both MLP taps, per device (statistics are replicated).
    expert_stats = footprint.statistics(shapes.taps[2:], True)
    assert report["per_device_bytes"]["statistics"] >= 2 * expert_stats
    assert report["fits"] is True
