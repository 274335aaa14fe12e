import dataclasses

import pytest

from core import config as config_lib
from core.demo import PRESETS, DemoConfig


def test_override_nested_keys_and_types():
    base = PRESETS["tiny"][1]
    changed = config_lib.override(base, {"train.steps": 7, "learning_rate": 1, "mesh.fsdp": 2})
    assert changed.train.steps == 7 and changed.mesh.fsdp == 2
    assert changed.learning_rate == 1.0 and isinstance(changed.learning_rate, float)
    assert base.train.steps == 200  # frozen: the preset is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.learning_rate = 0.1


def test_unknown_key_and_wrong_type_are_errors():
    base = PRESETS["tiny"][1]
    with pytest.raises(KeyError, match=r"unknown config key 'train.stepz'.*'steps'"):
        config_lib.override(base, {"train.stepz": 3})
    with pytest.raises(KeyError, match="unknown config key 'learning_rate.x'"):
        config_lib.override(base, {"learning_rate.x": 3})
    with pytest.raises(TypeError, match=r"'train.steps': expected int, got str"):
        config_lib.override(base, {"train.steps": "many"})
    with pytest.raises(TypeError, match="compute_dtype"):
        config_lib.override(base, {"train.compute_dtype": "float64"})


def test_dict_round_trip_rejects_unknown_keys():
    base = PRESETS["full"][1]
    assert config_lib.from_dict(DemoConfig, config_lib.to_dict(base)) == base
    data = config_lib.to_dict(base)
    data["extra"] = 1
    with pytest.raises(KeyError, match="extra"):
        config_lib.from_dict(DemoConfig, data)


def test_cli_presets_and_overrides(capsys):
    config = config_lib.cli(PRESETS, args=["tiny", "--train.steps", "3", "--mesh.tensor", "2"])
    assert config.train.steps == 3 and config.mesh.tensor == 2 and config.model == PRESETS["tiny"][1].model
    with pytest.raises(SystemExit) as exit_info:
        config_lib.cli(PRESETS, args=["tiny", "--train.nonsense", "3"])
    assert exit_info.value.code == 2
    assert "nonsense" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config_lib.cli(PRESETS, args=["tiny", "--train.steps", "three"])
