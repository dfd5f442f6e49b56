"""Every run config round-trips the same way: dict, YAML and JSON, unknown keys refused."""

from __future__ import annotations

import json

import pytest

from jaxprune.core.config import ConfigIO
from jaxprune.federated import FedConfig, FedTinyConfig
from jaxprune.recipes import Recipe
from jaxprune.structured import StructuredRecipe
from jaxprune.training import LoraConfig, RecoverConfig

CONFIGS = [
    Recipe(method="wanda", sparsity="2:4", ignore=("lm_head",), overrides={"layers/0/.*": 0.3}),
    StructuredRecipe(method="flap", sparsity=0.3, block_range=(1, 3)),
    RecoverConfig(method="masked", steps=5, lora=LoraConfig(rank=4, targets=("a", "b"))),
    LoraConfig(rank=2, ignore=("x",)),
    FedConfig(rounds=3, learning_rate=0.1),
    FedTinyConfig(distributions=("erk",), every=2),
]
IDS = [type(c).__name__ for c in CONFIGS]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_every_config_shares_the_one_implementation(config):
    assert isinstance(config, ConfigIO)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_to_dict_is_json_data_and_from_dict_inverts_it(config):
    d = config.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert type(config).from_dict(d) == config


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_save_then_load_gives_the_same_config_and_leaves_no_temporary(config, suffix, tmp_path):
    path = tmp_path / f"config{suffix}"
    config.save(path)
    assert type(config).load(path) == config
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    if suffix == ".json":
        assert json.loads(path.read_text()) == config.to_dict()


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_unknown_keys_are_refused_listing_the_known_ones(config):
    with pytest.raises(ValueError, match=r"unknown .* fields \['colour'\]; known: \[") as err:
        type(config).from_dict({**config.to_dict(), "colour": 1})
    assert all(name in str(err.value) for name in config.to_dict())


def test_a_nested_lora_config_is_checked_as_strictly():
    with pytest.raises(ValueError, match=r"unknown LoRA config fields \['rnk'\]"):
        RecoverConfig.from_dict({"lora": {"rnk": 4}})


def test_a_bad_file_names_itself(tmp_path):
    path = tmp_path / "fed.yaml"
    path.write_text("rounds: 0\n")
    with pytest.raises(ValueError, match=f"{path}: rounds, clients"):
        FedConfig.load(path)


def test_the_old_learning_rate_name_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="learning_rate"):
        config = FedConfig(lr=0.2)
    assert config.learning_rate == 0.2
    with pytest.warns(DeprecationWarning, match="learning_rate"):
        assert config.lr == 0.2
