"""The method plug-in API: registry, per-method option sections, data needs, a user's own method."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fixtures_data import make_hdf5_dataset
from uncol.config import config_from_dict, config_reference_markdown
from uncol.data.training import SampleSet, StepBatches
from uncol.engine import Trainer
from uncol.errors import ConfigError, DataError
from uncol.methods import get_method, method_names, register_method
from uncol.methods.base import TrainingMethod
from uncol.runs import RunPaths, load_run_config

USER_METHOD = '''
from dataclasses import dataclass

import torch

from uncol.config import option
from uncol.methods import DataNeeds, TrainingMethod, check_range, register_method
from uncol.methods.losses import SegmentationLoss


@dataclass
class EntropyMinOptions:
    """Supervised loss plus entropy minimisation on unlabeled images."""

    weight: float = option(0.1, "Weight of the entropy term.")
    unlabeled_batch_size: int = option(2, "Unlabeled images per step.")


@register_method
class EntropyMin(TrainingMethod):
    name = "entropy_min"
    options_class = EntropyMinOptions

    def __init__(self, cfg, network):
        super().__init__(cfg, network)
        self.loss = SegmentationLoss()

    @classmethod
    def validate_config(cls, cfg):
        check_range("method.entropy_min.weight", cfg.method.options.weight, 0)

    def data_needs(self):
        return DataNeeds(unlabeled_batch_size=self.options.unlabeled_batch_size)

    def train_step(self, batch, ctx):
        sup = self.loss(self.network(batch["image"]), batch["label"])
        p = torch.softmax(self.network(batch["unlabeled_image"]), dim=1)
        ent = -(p * torch.log(p.clamp_min(1e-8))).sum(1).mean()
        return {"loss": sup + self.options.weight * ent, "loss_entropy": ent.detach()}
'''


def tiny_values(tmp_path: Path, **method: object) -> dict:
    data = make_hdf5_dataset(tmp_path / "data", n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3)
    return {
        "name": "plugin",
        "output_dir": str(tmp_path / "runs"),
        "data": dataclasses.asdict(data) | {"normalize": "zscore"},
        "split": {"labeled": 2},
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "method": method or {"name": "supervised"},
        "train": {"iterations": 4, "batch_size": 2, "patch_size": [32, 32], "val_every": 0, "checkpoint_every": 2,
                  "log_every": 1, "threads": 1, "device": "cpu"},
    }


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"method.name: unknown method 'nope'; known: supervised.*uncol"):
        config_from_dict({"method": {"name": "nope"}})


def test_options_outside_their_section_name_the_right_key():
    base = {"model": {"arch": "uncol_student2d", "channels": [8, 16, 32, 64], "vit_patch": 8},
            "augment": {"rotate_degrees": 0.0}, "teacher": {"name": "litemedsam"}}
    with pytest.raises(ConfigError, match=r"'method.stage1_fraction'.*'method.uncol.stage1_fraction'"):
        config_from_dict(base | {"method": {"name": "uncol", "stage1_fraction": 0.5}})
    with pytest.raises(ConfigError, match=r"method.uncol: options of method 'uncol', but method.name=supervised"):
        config_from_dict({"method": {"name": "supervised", "uncol": {"stage1_fraction": 0.5}}})
    with pytest.raises(ConfigError, match=r"method.uncol.stage1_fraction: expected a number"):
        config_from_dict(base | {"method": {"name": "uncol", "uncol": {"stage1_fraction": "half"}}})
    with pytest.raises(ConfigError, match=r"unknown option 'method.uncol.nope'"):
        config_from_dict(base | {"method": {"name": "uncol", "uncol": {"nope": 1}}})
    with pytest.raises(ConfigError, match=r"method.uncol.ema_decay: must be in \(0, 1\)"):
        config_from_dict(base | {"method": {"name": "uncol", "uncol": {"ema_decay": 1.5}}})
    with pytest.raises(ConfigError, match=r"unknown option 'method.supervised.nope'"):
        config_from_dict({"method": {"name": "supervised", "supervised": {"nope": 1}}})


def test_a_method_without_options_refuses_a_section(scratch_registry):
    @register_method
    class Optionless(TrainingMethod):
        name = "optionless"

    assert config_from_dict({"method": {"name": "optionless"}}).method.options is None
    with pytest.raises(ConfigError, match=r"method.optionless: method 'optionless' has no options"):
        config_from_dict({"method": {"name": "optionless", "optionless": {}}})


def test_method_section_round_trips_through_yaml_and_overrides():
    cfg = config_from_dict(
        {"model": {"arch": "uncol_student2d", "channels": [8, 16, 32, 64], "vit_patch": 8},
         "augment": {"rotate_degrees": 0.0}, "teacher": {"name": "litemedsam"}, "method": {"name": "uncol"}},
        ["method.uncol.distill=visual", "method.uncol.stage1_fraction=0.25"],
    )
    assert cfg.method.options.distill == "visual" and cfg.method.options.stage1_fraction == 0.25
    d = cfg.to_dict()
    assert set(d["method"]) == {"name", "module", "uncol"}
    assert config_from_dict(d).to_dict() == d


def test_register_refuses_bad_and_taken_names(scratch_registry):
    class Unnamed(TrainingMethod):
        name = "not a name"

    with pytest.raises(ValueError, match="identifier"):
        register_method(Unnamed)

    class Impostor(TrainingMethod):
        name = "supervised"

    with pytest.raises(ValueError, match="taken"):
        register_method(Impostor)
    assert get_method("supervised").__name__ == "SupervisedMethod"


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test are dropped after it (the registry is process-wide)."""
    from uncol.methods import registry

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


def test_a_users_method_in_their_own_file_trains_evaluates_and_is_documented(tmp_path, scratch_registry):
    module = tmp_path / "my_methods.py"
    module.write_text(textwrap.dedent(USER_METHOD))
    values = tiny_values(tmp_path, name="entropy_min", module=str(module), entropy_min={"weight": 0.2})
    cfg = config_from_dict(values)
    assert cfg.method.options.weight == 0.2 and "entropy_min" in method_names()
    with pytest.raises(ConfigError, match="method.entropy_min.weight: must be >= 0"):
        config_from_dict(values, ["method.entropy_min.weight=-1"])
    run = tmp_path / "runs" / "plugin"
    summary = Trainer(cfg, run, show_progress=False).fit()
    assert summary.steps_done == 4
    # The engine supplied the unlabeled images the method asked for, and counted them.
    assert summary.images_seen == {"labeled": 8, "unlabeled": 8}
    assert json.loads(RunPaths(run).summary.read_text())["images_seen"] == {"labeled": 8, "unlabeled": 8}
    header = RunPaths(run).log_csv.read_text().splitlines()[0]
    assert "loss_entropy" in header
    # The stored config names the module, so reading the run finds the method again.
    assert load_run_config(run).method.options.weight == 0.2
    assert "### `method.entropy_min`" in config_reference_markdown()
    # An unimportable module is a config error naming it.
    with pytest.raises(ConfigError, match="method.module: no such file"):
        config_from_dict(values | {"method": {"name": "entropy_min", "module": str(tmp_path / "missing.py")}})
    with pytest.raises(ConfigError, match="method.module: importing 'no_such_module_xyz' failed"):
        config_from_dict(values | {"method": {"name": "x", "module": "no_such_module_xyz"}})


def test_views_repeat_each_drawn_sample_with_independent_augmentations(tmp_path):
    cfg = config_from_dict(tiny_values(tmp_path))
    from uncol.data.index import discover
    from uncol.data.splits import make_splits

    splits = make_splits(discover(cfg.data), cfg.split)
    labeled = SampleSet(splits.labeled, cfg, use_labels=True)
    batches = StepBatches(labeled, 3, seed=0, augment=cfg.augment, unlabeled=labeled, unlabeled_batch_size=2, views=2)
    b = batches[5]
    assert b["image"].shape[0] == 6 and b["unlabeled_image"].shape[0] == 4
    assert b["ids"][0::2] == b["ids"][1::2] and b["unlabeled_ids"][0::2] == b["unlabeled_ids"][1::2]
    # Views differ (independent intensity augmentation) but show the same sample.
    assert not np.allclose(b["image"][0].numpy(), b["image"][1].numpy())
    again = StepBatches(labeled, 3, seed=0, augment=cfg.augment, unlabeled=labeled, unlabeled_batch_size=2, views=2)[5]
    assert np.array_equal(b["image"].numpy(), again["image"].numpy())  # still a pure function of (seed, step)
    with pytest.raises(ValueError, match="views"):
        StepBatches(labeled, 3, seed=0, augment=None, views=0)


def test_phases_draw_the_first_images_of_the_full_batch(tmp_path):
    cfg = config_from_dict(tiny_values(tmp_path))
    from uncol.data.index import discover
    from uncol.data.splits import make_splits

    splits = make_splits(discover(cfg.data), cfg.split)
    labeled = SampleSet(splits.labeled, cfg, use_labels=True)
    full = StepBatches(labeled, 4, seed=0, augment=cfg.augment, unlabeled=labeled, unlabeled_batch_size=2)
    phased = StepBatches(labeled, 4, seed=0, augment=cfg.augment, unlabeled=labeled,
                         phases=[(0, 4, 0), (3, 2, 1)])
    assert phased.sizes(2) == (4, 0) and phased.sizes(3) == (2, 1) and phased.sizes(100) == (2, 1)
    early = phased[2]
    assert early["image"].shape[0] == 4 and "unlabeled_image" not in early  # nothing unlabeled drawn
    assert np.array_equal(early["image"].numpy(), full[2]["image"].numpy())
    late, late_full = phased[4], full[4]
    assert late["image"].shape[0] == 2 and late["unlabeled_image"].shape[0] == 1
    # A phase reading fewer images reads the same ones: the first of the full batch, augmentations included.
    assert np.array_equal(late["image"].numpy(), late_full["image"].numpy()[:2])
    assert late["ids"] == late_full["ids"][:2] and late["geometry"] == late_full["geometry"][:2]
    assert np.array_equal(late["unlabeled_image"].numpy(), late_full["unlabeled_image"].numpy()[:1])
    with pytest.raises(DataError, match="unlabeled"):
        StepBatches(labeled, 4, seed=0, augment=None, phases=[(0, 4, 0), (3, 2, 1)])
    with pytest.raises(ValueError, match="step 0"):
        StepBatches(labeled, 4, seed=0, augment=None, phases=[(2, 4, 0)])


def test_data_needs_phases_are_checked_and_counted():
    from uncol.methods import BatchPhase, DataNeeds
    from uncol.methods.base import phase_totals, run_phases

    needs = DataNeeds(phases=(BatchPhase(0, 4, 0), BatchPhase(6, 2, 2)))
    assert needs.reads_unlabeled and not DataNeeds(phases=(BatchPhase(0, 4, 0),)).reads_unlabeled
    assert DataNeeds(unlabeled_batch_size=1).reads_unlabeled and not DataNeeds().reads_unlabeled
    assert phase_totals(needs.phases, 10) == {"labeled": 6 * 4 + 4 * 2, "unlabeled": 4 * 2}
    assert phase_totals(needs.phases, 5) == {"labeled": 5 * 4, "unlabeled": 0}
    # A stage of no steps (at the start, or past the end of the run) leaves no phase.
    first, second = BatchPhase(0, 4, 0), BatchPhase(6, 2, 2)
    assert run_phases(10, first, second) == (first, second)
    assert run_phases(6, first, second) == run_phases(5, first, second) == (first,)
    assert run_phases(10, first, BatchPhase(0, 2, 2)) == (BatchPhase(0, 2, 2),)
    with pytest.raises(ValueError, match="begin at 0"):
        DataNeeds(phases=(BatchPhase(1, 4, 0),))
    with pytest.raises(ValueError, match="increase"):
        DataNeeds(phases=(BatchPhase(0, 4, 0), BatchPhase(0, 2, 2)))
    with pytest.raises(ValueError, match="labeled"):
        DataNeeds(phases=(BatchPhase(0, 0, 2),))
