import pytest
import yaml

from clipbridge import config


def _raw(repo_root):
    with open(f"{repo_root}/params.yaml") as f:
        return yaml.safe_load(f)


def test_repo_params_load(repo_root):
    p = config.load(f"{repo_root}/params.yaml")
    assert p.profile == "offline"
    assert p.headline == "dcgan64" and "sg2-64" in p.generators and p.active.lpips == "LPIPS-rand"
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


def test_unknown_generator_lists_choices(repo_root):
    raw = _raw(repo_root)
    raw["generators"] = ["dcgan64", "stylegan9"]
    with pytest.raises(config.ConfigError, match=r"\['stylegan9'\].*available: \[.*'sg2-64'"):
        config.from_dict(raw)


def test_offline_profile_refuses_downloading_generators(repo_root):
    raw = _raw(repo_root)
    raw["generators"] = ["sg2-ffhq-512"]
    with pytest.raises(config.ConfigError, match="download weights, which profile 'offline' does not allow"):
        config.from_dict(raw)
    raw["profile"] = "pretrained"
    assert config.from_dict(raw).headline == "sg2-ffhq-512"


def test_ablation_cell_changes_only_its_fields(repo_root):
    p = config.load(f"{repo_root}/params.yaml")
    cfg = p.ablate.cells["depth-1"].train_config(p.train, steps=7, seed=2)
    assert (cfg.depth, cfg.steps, cfg.seed) == (1, 7, 2)
    assert (cfg.width, cfg.target, cfg.loss_rgb, cfg.lr) == (p.train.width, p.train.target, p.train.loss_rgb, p.train.lr)
    assert p.ablate.cells["report-dcgan64"].train_config(p.train, p.train.steps, p.train.seed) == p.train


def test_encoder_study_section(repo_root):
    raw = _raw(repo_root)
    p = config.from_dict(raw)
    assert p.encoders.generators == ["dcgan64"] and "clip-offline" in p.encoders.encoders
    assert p.train.steps in p.encoders.score_at and p.ablate.steps in p.encoders.score_at  # the reproduction check
    raw["encoders"]["generators"] = ["sg2-ffhq-256"]          # downloads its weights: not offline
    with pytest.raises(config.ConfigError, match="sg2-ffhq-256"):
        config.from_dict(raw)
    raw["encoders"]["generators"] = ["nope"]
    with pytest.raises(config.ConfigError, match=r"unknown or no generator\(s\) \['nope'\].*encoders.generators"):
        config.from_dict(raw)
    raw["encoders"]["generators"] = ["dcgan64"]
    raw["encoders"]["learned"]["chanels"] = 8
    with pytest.raises(config.ConfigError, match=r"unknown key\(s\) \['chanels'\] in 'encoders.learned'"):
        config.from_dict(raw)
