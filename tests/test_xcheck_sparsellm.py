"""The SparseLLM cross-check's own pieces: the original's printed errors are read back per pass,
and the s-step stability factor is lr times the true second derivative (torch autograd)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def xcheck(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.xcheck import sparsellm, sparsellm_sstep

    return sparsellm, sparsellm_sstep


def test_pass_errors_reads_one_error_per_pruning_pass_in_order(xcheck):
    sparsellm, _ = xcheck
    printed = "\n".join(
        [
            "0 self_attn.q_proj", "Pruning ...", "time 0.20", "error 352.5",
            "0 mlp.up_proj", "Pruning ...", "time 0.2", "error 11000.0",
            "0 mlp.up_proj", "Pruning ...", "time 0.2", "error 208.25",
            "12 mlp.gate_proj", "Pruning ...", "time 0.2", "error 6.5e+19",
            "unrelated line", "error",
        ]
    )  # fmt: skip
    assert sparsellm.pass_errors(printed) == {
        "0.self_attn.q_proj": [352.5],
        "0.mlp.up_proj": [11000.0, 208.25],
        "12.mlp.gate_proj": [6.5e19],
    }


def test_tee_keeps_what_it_sees_and_passes_it_on(xcheck, capsys):
    import contextlib
    import io

    sparsellm, _ = xcheck
    sink = io.StringIO()
    with contextlib.redirect_stdout(sparsellm._Tee(sink)):
        print("3 mlp.down_proj")
    assert sink.getvalue() == "3 mlp.down_proj\n"
    assert capsys.readouterr().out == "3 mlp.down_proj\n"


def test_step_factor_is_lr_times_the_second_derivative_at_the_dense_point(xcheck):
    _, sstep = xcheck
    rng = np.random.default_rng(0)
    s = rng.normal(0, 3, 64)
    z = rng.normal(0, 20, 64)
    m = s + rng.normal(0, 1, 64)  # the alpha term's target does not enter the curvature
    alpha, gamma, lr = 5.0, 5.0, 0.01
    st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    zt, mt = torch.tensor(z, dtype=torch.float64), torch.tensor(m, dtype=torch.float64)
    pt = torch.nn.functional.silu(torch.tensor(s, dtype=torch.float64)) * zt

    def loss(x):
        return (alpha * (x - mt) ** 2 + gamma * (pt - torch.nn.functional.silu(x) * zt) ** 2).sum()

    hessian = torch.autograd.functional.hessian(loss, st)
    assert np.allclose(
        np.diag(hessian.numpy()), sstep.step_factor(s, z, alpha=alpha, gamma=gamma, lr=lr) / lr
    )
    assert np.allclose(hessian.numpy() - np.diag(np.diag(hessian.numpy())), 0)  # entrywise


def test_a_gradient_step_grows_a_deviation_exactly_where_the_factor_passes_two(xcheck):
    _, sstep = xcheck
    alpha, gamma, lr = 5.0, 5.0, 0.01
    s = np.array([0.5, 0.5, 2.0, 2.0])
    z = np.array([1.0, 3.0, 10.0, 60.0])
    factor = sstep.step_factor(s, z, alpha=alpha, gamma=gamma, lr=lr)
    st = torch.tensor(s, dtype=torch.float64)
    zt = torch.tensor(z, dtype=torch.float64)
    p = torch.nn.functional.silu(st) * zt  # the dense point: the minimiser with m = s
    x = (st + 1e-6).requires_grad_(True)
    loss = (alpha * (x - st) ** 2 + gamma * (p - torch.nn.functional.silu(x) * zt) ** 2).sum()
    loss.backward()
    after = (x - lr * x.grad).detach() - st
    grows = (after.abs() > 1e-6).numpy()
    assert list(grows) == list(factor > 2)
    stats = sstep.block_stats(factor, z)
    assert stats["entries_past_2"] == int((factor > 2).sum()) and stats["max_abs_z"] == 60.0


def test_s_lr_ablation_rewrites_the_one_literal_or_refuses(xcheck, tmp_path, monkeypatch):
    import sys

    sparsellm, _ = xcheck
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_original puts checkouts first
    monkeypatch.delitem(sys.modules, "model_utils", raising=False)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "model_utils.py").write_text(
        "def rate():\n    s_learning_rate = 0.01\n    return s_learning_rate\n"
    )
    assert sparsellm.import_model_utils(str(checkout), 0).rate() == 0.0
    assert sparsellm.import_model_utils(str(checkout), 3e-5).rate() == 3e-5
    assert sparsellm.import_model_utils(str(checkout), None).rate() == 0.01
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_utils.py").write_text("s_learning_rate = 0.01\ns_learning_rate = 0.01\n")
    monkeypatch.delitem(sys.modules, "model_utils")  # one checkout per process, as in a run
    with pytest.raises(SystemExit, match="occurs 2×, not 1×"):
        sparsellm.import_model_utils(str(other), 0)


def test_jaxprune_side_is_reused_only_from_a_run_on_the_same_windows(xcheck, tmp_path):
    import argparse
    import json

    sparsellm, _ = xcheck
    args = argparse.Namespace(
        model="smollm2-135m", sparsity=0.7, nsamples=64, seqlen=512, eval_nsamples=32, seed=0,
        bos=False,
    )  # fmt: skip
    recorded = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [{"jaxprune_ppl": 97.2, "jaxprune_sparsity": 0.7, "jaxprune_seconds": 1.0}],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(recorded))
    assert sparsellm.recorded_jaxprune(path, args) == {"ppl": 97.2, "sparsity": 0.7, "seconds": 1.0}
    args.seqlen = 256
    with pytest.raises(SystemExit, match="seqlen differ"):
        sparsellm.recorded_jaxprune(path, args)
