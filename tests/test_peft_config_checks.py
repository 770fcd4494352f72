"""SoKAConfig, get_soka_model and from_pretrained refuse bad arguments with named errors."""

import json

import pytest
import torch

import fusekit
import fusekit.peft as fp


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 0}, "alpha must be a finite non-zero number"),
    ({"alpha": float("nan")}, "alpha must be a finite non-zero number"),
    ({"alpha": "16"}, "alpha must be a finite non-zero number"),
    ({"modules_to_save": "classifier"}, r"for one module: \['classifier'\]"),
    ({"target_modules": "q_proj("}, "target_modules is not a valid regex"),
    ({"target_modules": 0}, "target_modules must be a list of module names"),
    ({"target_modules": [0]}, "target_modules must be a list of module names"),
    ({"rank_pattern": {"a(": 2}}, "rank_pattern key 'a\\(' is not a valid regex"),
    ({"rank_pattern": [1]}, "rank_pattern must be a dict"),
    ({"a_shape": (4.0, 8.0), "b_shape": (2, 2)}, "a_shape must be two positive ints"),
    ({"a_shape": 4, "b_shape": 4}, "a_shape must be two positive ints"),
    ({"rank_rule": {"energie": 0.9}}, "unknown: 'energie'"),
    ({"rank_rule": 0.9}, "rank_rule must be a dict"),
    ({"seed": "1"}, "seed must be an int"),
])
def test_bad_config_values_are_refused(kwargs, match):
    with pytest.raises(fusekit.InputError, match=match):
        fp.SoKAConfig(**kwargs)


def test_good_configs_still_pass():
    fp.SoKAConfig(a_shape=(4, 8), b_shape=(2, 2))
    fp.SoKAConfig(alpha=16, rank_rule={"energy": 0.9}, target_modules=r".*proj",
                  rank_pattern={"layers.0.q_proj": 4}, modules_to_save=["classifier"])


def test_get_soka_model_names_a_wrong_model_or_config():
    net = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with pytest.raises(fusekit.InputError, match="config must be a SoKAConfig, got dict"):
        fp.get_soka_model(net, {"r": 2})
    with pytest.raises(fusekit.InputError, match="model must be a torch.nn.Module, got dict"):
        fp.get_soka_model({"a": 1}, fp.SoKAConfig(r=2))


def test_from_pretrained_names_damaged_or_misplaced_files(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(8, 8))
    (tmp_path / "adapter_config.json").write_text("{oops")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(fusekit.InputError, match="not a SoKA adapter config"):
        fp.from_pretrained(net, tmp_path)
    with pytest.raises(fusekit.InputError, match="give the directory save_pretrained wrote"):
        fp.from_pretrained(net, tmp_path / "adapter_config.json")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"layers": {}, "config": {}}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"xx")
    with pytest.raises(fusekit.InputError, match="is not a safetensors file"):
        fp.from_pretrained(net, tmp_path)
