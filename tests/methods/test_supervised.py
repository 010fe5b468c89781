"""Supervised training: plain by default; copy-paste between labeled images keeps image and label aligned."""

from __future__ import annotations

import math

import pytest
import torch
from baseline_runs import (
    column,
    data2d,  # noqa: F401 - fixture
    data3d,  # noqa: F401 - fixture
    read_log,
    tiny_config,
)

import uncol
from uncol.errors import ConfigError
from uncol.methods import StepContext
from uncol.methods.supervised import SupervisedMethod


class _Recorder(torch.nn.Module):
    """Identity network that keeps its last input (to see what the method fed it)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x * self.scale


def _batch(n: int = 4, k: int = 3, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with one constant value per image, and one-hot images that encode the same labels."""
    y = torch.stack([torch.full((side, side), i % k) for i in range(n)])
    x = torch.nn.functional.one_hot(y, k).permute(0, 3, 1, 2).float()
    return x, y


def test_default_is_plain_supervised_training(tmp_path, data2d):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "supervised")
    assert cfg.method.options.copy_paste_prob == 0.0
    net = _Recorder()
    method = SupervisedMethod(cfg, net)
    x, y = _batch()
    out = method.train_step({"image": x, "label": y}, StepContext(0, 6, torch.device("cpu")))
    assert torch.equal(net.seen, x) and set(out) == {"loss"}


@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_copy_paste_mixes_image_and_label_with_the_same_box(tmp_path, data2d, prob):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d, "supervised", options={"copy_paste_prob": prob, "copy_paste_grid": 4},
                      batch_size=4)
    method = SupervisedMethod(cfg, _Recorder())
    x, y = _batch(n=8)
    mixed_counts = []
    for step in range(20):
        ctx = StepContext(step, 20, torch.device("cpu"))
        xm, ym, m = method.copy_paste(x, y, ctx)
        assert torch.equal(xm.argmax(1), ym)  # the pasted pixels carry their own labels
        for i in range(8):
            if m[i].any():
                rows, cols = m[i].nonzero(as_tuple=True)
                box = m[i, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
                assert box.all() and int(m[i].sum()) == 20 * 20  # one box: round(2/3 x 8 cells) = 5 cells of 4 px per side
                assert rows.min() % 4 == 0 and cols.min() % 4 == 0  # corners on the grid
                assert torch.equal(ym[i][m[i]], y[(i - 1) % 8][m[i]])  # taken from the previous image
            assert torch.equal(ym[i][~m[i]], y[i][~m[i]])
        mixed_counts.append(int(m.flatten(1).any(1).sum()))
        again = method.copy_paste(x, y, ctx)[2]
        assert torch.equal(m, again)  # seeded by (train.seed, step)
    if prob == 1.0:
        assert mixed_counts == [8] * 20
    else:
        assert 0.3 < sum(mixed_counts) / (8 * 20) < 0.7  # about half the images, the others unmixed


def test_copy_paste_options_are_validated(tmp_path, data2d):  # noqa: F811
    for options, key in (({"copy_paste_prob": 1.5}, "copy_paste_prob"), ({"copy_paste_box": 0.0}, "copy_paste_box"),
                         ({"copy_paste_prob": 0.5, "copy_paste_grid": 5}, "copy_paste_grid")):
        with pytest.raises(ConfigError, match=f"method.supervised.{key}"):
            SupervisedMethod.validate_config(tiny_config(tmp_path, data2d, "supervised", options=options))


@pytest.mark.parametrize("dims", [2, 3])
def test_supervised_with_copy_paste_end_to_end(tmp_path, data2d, data3d, dims):  # noqa: F811
    cfg = tiny_config(tmp_path, data2d if dims == 2 else data3d, "supervised", dims, options={"copy_paste_prob": 0.5})
    out = uncol.train(cfg, show_progress=False, run_dir=tmp_path / "run", evaluate_splits=("test",))
    assert out["train"]["steps_done"] == 6
    assert 0.0 <= out["test"]["summary"]["mean"]["dice"]["mean"] <= 1.0
    rows = read_log(tmp_path / "run")
    assert all(math.isfinite(v) and v > 0 for v in column(rows, "loss"))
    assert all(v in (0.0, 0.5, 1.0) for v in column(rows, "mixed")) and len(column(rows, "mixed")) == 6
