from __future__ import annotations

from pathlib import Path

import pytest

from uncol.config import Config, config_from_dict, config_reference_markdown, load_config, parse_override
from uncol.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid():
    cfg = config_from_dict({})
    assert isinstance(cfg, Config)
    assert cfg.spatial_dims == 2


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown option 'train\.iteratons'"):
        config_from_dict({"train": {"iteratons": 5}})
    with pytest.raises(ConfigError, match=r"unknown option 'bogus'"):
        config_from_dict({"bogus": 1})


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"train": {"iterations": "ten"}}, "train.iterations"),
        ({"train": {"lr": True}}, "train.lr"),
        ({"model": {"arch": "resnet"}}, "model.arch"),
        ({"model": {"channels": [16, "x"]}}, r"model.channels\[1\]"),
        ({"data": "oops"}, "data"),
        ({"augment": {"flip": "yes"}}, "augment.flip"),
    ],
)
def test_wrong_types_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(values)


def test_overrides_are_parsed_as_yaml():
    cfg = config_from_dict({}, ["train.iterations=12", "train.patch_size=[64, 64]", "augment.flip=false", "name=x y"])
    assert cfg.train.iterations == 12
    assert cfg.train.patch_size == [64, 64]
    assert cfg.augment.flip is False
    assert cfg.name == "x y"
    assert config_from_dict({}, ["train.lr=1e-3"]).train.lr == 1e-3
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="not a section"):
        config_from_dict({"name": "a"}, ["name.x=1"])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="train.patch_size"):
        config_from_dict({"model": {"arch": "unet3d"}, "train": {"patch_size": [64, 64]}})
    with pytest.raises(ConfigError, match="divisible by 16"):
        config_from_dict({"train": {"patch_size": [100, 100]}})
    with pytest.raises(ConfigError, match="class_names"):
        config_from_dict({"data": {"num_classes": 3, "class_names": ["a", "b"]}})
    with pytest.raises(ConfigError, match="split.labeled"):
        config_from_dict({"split": {"labeled": 2.5}})


def test_load_config_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  batch_size: big\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: train.batch_size"):
        load_config(wrong)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    load_config(REPO / "configs" / name)


def test_roundtrip_through_yaml(tmp_path):
    cfg = config_from_dict({"train": {"iterations": 7}, "data": {"spacing": [1, 2]}})
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg


def test_configuration_reference_is_up_to_date():
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc.strip() == config_reference_markdown().strip(), "regenerate with `make docs`"
