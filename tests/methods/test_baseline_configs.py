"""The shipped Mean Teacher, UA-MT and BCP configurations: they load, and keep the supervised protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from uncol.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("dataset", ["acdc", "hippocampus"])
@pytest.mark.parametrize("method", ["mean_teacher", "ua_mt", "bcp"])
def test_baseline_config_keeps_the_supervised_protocol(dataset, method):
    cfg = load_config(CONFIGS / f"{dataset}_{method}.yaml")
    supervised = load_config(CONFIGS / f"{dataset}_supervised.yaml")
    assert cfg.method.name == method
    # Same data, split, network, augmentation, labeled batch and schedule as the supervised baseline.
    for part in ("data", "split", "model", "augment", "eval"):
        assert getattr(cfg, part) == getattr(supervised, part), part
    assert cfg.train == supervised.train
    options = cfg.method.options
    if method == "bcp":
        assert options.pretrain_fraction == 0.25 and options.unlabeled_weight == 0.5
    else:
        assert options.unlabeled_batch_size == cfg.train.batch_size  # the references' 1:1 ratio
        assert options.ema_decay == 0.99 and options.consistency_rampup == 1.0
