"""Memory formulas against XLA's own accounting, and `jaxprune plan` on published model shapes.

Each formula is compared with ``compiled.memory_analysis()`` (arguments + outputs + temporaries)
of the program it describes, at small shapes, within 15%.
"""

import json

import jax
import jax.numpy as jnp
import pytest

from jaxprune import footprint
from jaxprune.cli import main
from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.engine import calibrate
from jaxprune.methods import magnitude, ria, scored, sparsellm_steps, statistics, wanda
from jaxprune.methods.sparsegpt_sweep import solver_inputs, sweep
from jaxprune.models import LanguageModel, LlamaConfig

# Published shapes (the models' config.json files on the Hugging Face hub) and parameter counts.
LLAMA_2_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
}
LLAMA_2_70B = {
    **LLAMA_2_7B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
}
LLAMA_31_405B = {
    **LLAMA_2_7B,
    "hidden_size": 16384,
    "intermediate_size": 53248,
    "num_hidden_layers": 126,
    "num_attention_heads": 128,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
PUBLISHED = [(LLAMA_2_7B, 6_738_415_616), (LLAMA_2_70B, 68_976_648_192), (LLAMA_31_405B, 405.8e9)]


def _xla_bytes(fn, *args, **kwargs) -> int:
    m = fn.lower(*args, **kwargs).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes


def _close(formula: float, measured: int) -> None:
    assert abs(formula - measured) <= 0.15 * measured, (formula, measured)


@pytest.mark.parametrize(("config", "count"), PUBLISHED)
def test_shapes_from_a_config_count_the_published_parameters(config, count):
    assert footprint.Shapes.from_hf_config(config).params == pytest.approx(count, rel=2e-3)


@pytest.mark.parametrize(
    ("windows", "seqlen"), [(4, 64), pytest.param(8, 128, marks=pytest.mark.slow), (2, 256)]
)
def test_forward_step_formula_matches_xla(windows, seqlen):
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LanguageModel(config)
    block = model.block_params(model.init_params(0), 0)
    taps = tuple(tap for tap, _ in model.family.sequential_groups)
    hidden = jnp.ones((windows, seqlen, 128))
    measured = _xla_bytes(
        calibrate._forward_step, model, block, hidden, 0, taps=taps, with_output=True, batch=None
    )
    shapes = footprint.Shapes(128, 384, 1, 4, 2, 32, 64)
    _close(footprint.forward_step(shapes, windows, seqlen, 4), measured)


@pytest.mark.parametrize("hessian", [True, False])
def test_statistics_formula_matches_xla(hessian):
    widths = [128, 128, 128, 384]
    statistic = statistics.HESSIAN if hessian else statistics.SQ_NORMS
    taps = {f"t{i}": jnp.ones((4, 64, w)) for i, w in enumerate(widths)}
    stats = {f"t{i}": statistic.init(w) for i, w in enumerate(widths)}
    m = (
        calibrate._statistics_step.lower(
            taps,
            stats,
            {},
            statistic=statistic,
            stat_taps=tuple(sorted(taps)),
            error_taps=(),
            collect_taps=(),
            replicated=None,
        )
        .compile()
        .memory_analysis()
    )
    _close(footprint.statistics(widths, hessian), m.output_size_in_bytes)


@pytest.mark.parametrize(
    ("d_in", "d_out", "target"),
    [
        (256, 512, Unstructured(0.5)),
        pytest.param(512, 256, Unstructured(0.5), marks=pytest.mark.slow),
        pytest.param(512, 1024, NM(2, 4), marks=pytest.mark.slow),
        (1024, 512, Unstructured(0.5)),
        pytest.param(512, 4096, Unstructured(0.5), marks=pytest.mark.slow),
    ],
)
def test_sparsegpt_solver_formula_matches_xla(d_in, d_out, target):
    kernel, hessian, counts, blocksize, nm = solver_inputs(
        jnp.ones((d_in, d_out)), jnp.eye(d_in), target, blocksize=128, percdamp=0.01
    )
    measured = _xla_bytes(
        sweep, kernel, hessian, counts, jnp.float32(0.01), blocksize=blocksize, nm=nm, unroll=1
    )
    _close(footprint.sparsegpt_solver(d_in, d_out, 4, 128), measured)


@pytest.mark.parametrize(
    ("d_in", "d_out"), [(256, 512), pytest.param(512, 1024, marks=pytest.mark.slow)]
)
def test_score_solver_formula_matches_xla_for_magnitude_wanda_and_ria(d_in, d_out):
    kernel, norms, k = jnp.ones((d_in, d_out)), jnp.ones(d_in), jnp.int32(d_in // 2)
    half = jnp.int32(d_in * d_out // 2)
    alpha = {"alpha": jnp.float32(0.5)}
    programs = [  # (score, stats, k, score options, selection, n, m) through the shared selection
        (wanda.scores, norms, k, {}, "output", 0, 0),
        (wanda.scores, norms, k, {}, "output", 2, 4),
        (ria.scores, norms, half, alpha, "layer", 0, 0),
        (ria.scores, norms, k, alpha, "output", 2, 4),
        (magnitude.scores, None, half, {}, "layer", 0, 0),
        (magnitude.scores, None, k, {}, "layer", 2, 4),
    ]
    for score, stats, count, options, selection, n, m in programs:
        measured = _xla_bytes(
            scored._select,
            kernel,
            stats,
            count,
            options,
            score=score,
            selection=selection,
            n=n,
            m=m,
        )
        _close(footprint.score_solver(d_in, d_out, 4), measured)


@pytest.mark.parametrize("chunk", [1024, pytest.param(4096, marks=pytest.mark.slow)])
def test_sparsellm_chunk_formula_matches_xla(chunk):
    d, f = 128, 512
    x = y = jnp.ones((chunk, d))
    s = z = p = jnp.ones((chunk, f))
    kernels = {"gate": jnp.ones((d, f)), "up": jnp.ones((d, f)), "down": jnp.ones((f, d))}
    coef = {name: jnp.float32(1.0) for name in ("alpha", "beta", "gamma")}
    measured = _xla_bytes(
        sparsellm_steps.chunk_pass,
        "gated",
        "silu",
        x,
        y,
        s,
        z,
        p,
        kernels,
        {},
        (jnp.eye(d), jnp.eye(d)),
        coef,
        s_steps=2,
        update=True,
    )
    _close(footprint.sparsellm_chunk(d, f, chunk), measured)


def test_more_devices_hold_less_and_offload_holds_fewer_params():
    shapes = footprint.Shapes.from_hf_config(LLAMA_2_70B)
    peaks = [
        footprint.plan(shapes, footprint.Job("sparsegpt", mesh=mesh)).peak_bytes
        for mesh in ((1, 1), (8, 1), (8, 8))
    ]
    assert peaks[0] > peaks[1] > peaks[2]
    plain = footprint.plan(shapes, footprint.Job("wanda")).categories["params"]
    offload = footprint.plan(shapes, footprint.Job("wanda", offload=True)).categories["params"]
    assert offload < plain / 10


def test_owl_adds_its_prepass_phase():
    shapes = footprint.Shapes.from_hf_config(LLAMA_2_7B)
    assert "owl prepass" in footprint.plan(shapes, footprint.Job("wanda", owl=True)).phases


@pytest.mark.parametrize(("text", "value"), [("80GB", 80e9), ("141GiB", 141 * 2**30), ("5e8", 5e8)])
def test_memory_sizes_parse(text, value):
    assert footprint.parse_bytes(text) == int(value)


def test_plan_reads_a_config_alone_and_says_whether_it_fits(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_2_70B))
    argv = ["plan", "--model", str(tmp_path), "--method", "sparsegpt", "--dtype", "bfloat16"]
    # 1x8: the params split 8 ways; 8x1: every device holds all 138 GB of them.
    assert main([*argv, "--mesh", "1x8", "--device-memory", "80GB", "--json"]) == 0
    fits = json.loads(capsys.readouterr().out)
    assert fits["fits"] is True and fits["peak_bytes"] < 80e9
    assert main([*argv, "--mesh", "8x1", "--device-memory", "80GB", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "sparsegpt", "--mesh", "3"], "DATAxMODEL"),
        (["--method", "sparsegpt", "--device-memory", "lots"], "memory size"),
        (["--method", "wanda", "--mesh", "3x1", "--nsamples", "128"], "do not split"),
    ],
)
def test_plan_refuses_bad_input_with_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_2_7B))
    assert main(["plan", "--model", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_plan_refuses_a_directory_without_config(tmp_path, capsys):
    assert main(["plan", "--model", str(tmp_path), "--method", "wanda"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_no_device_is_touched_by_the_formulas():
    # Planning a 405B run must not need (or start) an accelerator: plain arithmetic.
    shapes = footprint.Shapes.from_hf_config(LLAMA_31_405B)
    result = footprint.plan(shapes, footprint.Job("sparsellm", mesh=(8, 8)))
    assert isinstance(result.peak_bytes, int) and jax.process_count() == 1
