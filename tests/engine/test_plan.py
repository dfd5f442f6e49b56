"""Planning a prune is pure: which linears, in which stages, decided from paths and the family."""

from __future__ import annotations

import jax
import pytest
from tiny_models import TINY_LLAMA

from jaxprune.engine.plan import JointMlp, PrunePlan, TapGroup
from jaxprune.methods import get_method
from jaxprune.models import LanguageModel
from jaxprune.models.opt import OPTConfig
from jaxprune.recipes import Recipe

LLAMA = LanguageModel(TINY_LLAMA)
# Shapes only: planning never touches a value.
PARAMS = jax.eval_shape(lambda: LLAMA.init_params(0))


def plan(recipe: Recipe, model: LanguageModel = LLAMA, params=PARAMS) -> PrunePlan:
    return PrunePlan.build(model, params, recipe, get_method(recipe.method))


def test_one_stage_per_block_visits_the_taps_in_the_familys_order():
    p = plan(Recipe(method="sparsegpt", sparsity=0.5))
    assert p.calibrated and not p.others and len(p.blocks) == 2
    assert len(p.linears) == 14 and p.paths == tuple(lin.path for lin in p.linears)
    (stage,) = p.blocks[1].stages
    assert [u.tap for u in stage] == ["attn_in", "o_in", "mlp_in", "down_in"]
    # Within a group, linears come in params order (as the params flatten).
    assert [lin.name for lin in stage[0].linears] == [
        "self_attn/k_proj",
        "self_attn/q_proj",
        "self_attn/v_proj",
    ]
    assert all(lin.block == 1 for u in stage for lin in u.linears)


def test_true_sequential_gives_each_tap_group_its_own_stage():
    p = plan(Recipe(method="wanda", sparsity=0.5, true_sequential=True))
    assert [[u.tap for u in stage] for stage in p.blocks[0].stages] == [
        ["attn_in"],
        ["o_in"],
        ["mlp_in"],
        ["down_in"],
    ]


def test_a_joint_method_solves_a_fully_targeted_mlp_as_one_unit_by_role():
    p = plan(Recipe(method="sparsellm", sparsity=0.7))
    (stage,) = p.blocks[0].stages
    assert [type(u) for u in stage] == [TapGroup, TapGroup, JointMlp]
    joint = stage[-1]
    assert joint.name == "layers/0/mlp"
    assert {role: lin.name for role, lin in joint.by_role.items()} == {
        "gate": "mlp/gate_proj",
        "up": "mlp/up_proj",
        "down": "mlp/down_proj",
    }


def test_a_partly_targeted_mlp_falls_back_to_per_kernel_solves():
    p = plan(Recipe(method="sparsellm", sparsity=0.7, ignore=(r".*/down_proj/kernel",)))
    (stage,) = p.blocks[0].stages
    assert all(isinstance(u, TapGroup) for u in stage)
    assert [u.tap for u in stage] == ["attn_in", "o_in", "mlp_in"]


def test_opt_mlp_roles_come_from_its_family_record():
    model = LanguageModel(
        OPTConfig(
            vocab_size=64,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=32,
        )
    )
    params = jax.eval_shape(lambda: model.init_params(0))
    (stage,) = plan(Recipe(method="sparsellm", sparsity=0.7), model, params).blocks[0].stages
    joint = stage[-1]
    assert isinstance(joint, JointMlp) and joint.spec.kind == "relu"
    assert {role: lin.name for role, lin in joint.by_role.items()} == {"in": "fc1", "out": "fc2"}


def test_magnitude_may_prune_leaves_outside_the_blocks_without_calibration():
    p = plan(Recipe(method="magnitude", sparsity=0.5, targets=("lm_head/kernel", r"layers/0/.*")))
    assert not p.calibrated
    assert "lm_head/kernel" in p.others and "layers/0/input_layernorm/scale" in p.others
    assert {lin.block for lin in p.linears} == {0}
    assert p.blocks[1].linears == () and p.blocks[1].stages == ()


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (Recipe(method="wanda", targets=("lm_head/kernel",)), "not linears of a decoder block"),
        (
            Recipe(method="magnitude", targets=("norm/scale",), allocation="owl"),
            "no target is a linear",
        ),
        (Recipe(method="sparsegpt", targets=("layers/9/.*",)), "matches no parameter"),
    ],
)
def test_impossible_plans_fail_before_any_work(recipe, message):
    with pytest.raises(ValueError, match=message):
        plan(recipe)
