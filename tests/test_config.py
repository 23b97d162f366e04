import pytest
import yaml

from clipbridge import config


def _raw(repo_root):
    with open(f"{repo_root}/params.yaml") as f:
        return yaml.safe_load(f)


def test_repo_params_load(repo_root):
    p = config.load(f"{repo_root}/params.yaml")
    assert p.profile == "offline"
    assert p.active.generator in {"dcgan64", "sg2-64"}
    assert p.train.depth == 4 and p.train.width == 1024 and p.train.activation == "relu"  # the report's bridge


def test_unknown_key_is_an_error(repo_root):
    raw = _raw(repo_root)
    raw["train"]["depht"] = 3
    with pytest.raises(config.ConfigError, match=r"unknown key\(s\) \['depht'\] in 'train'"):
        config.from_dict(raw)


def test_wrong_type_is_an_error(repo_root):
    raw = _raw(repo_root)
    raw["train"]["steps"] = "many"
    with pytest.raises(config.ConfigError, match="train.steps' must be int"):
        config.from_dict(raw)


def test_unknown_profile_lists_choices(repo_root):
    raw = _raw(repo_root)
    raw["profile"] = "gpu"
    with pytest.raises(config.ConfigError, match=r"available: \['offline', 'pretrained'\]"):
        config.from_dict(raw)


def test_bad_yaml_names_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(config.ConfigError, match=str(bad)):
        config.load(bad)
