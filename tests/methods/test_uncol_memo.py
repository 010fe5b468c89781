"""UnCoL's stage-2 foundation decodes reused within windows (``method.uncol.foundation_refresh``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_uncol import (  # noqa: F401
    LAYERS,
    assert_same_modules,
    column,
    data2d,
    data3d,
    fake_litemedsam,
    read_log,
    uncol_config,
)

from uncol.config import config_from_dict
from uncol.engine import RunPaths, Trainer
from uncol.errors import ConfigError
from uncol.methods.uncol.foundation_memo import FoundationLabelMemo


def stage2_decodes(monkeypatch: pytest.MonkeyPatch, cfg, run) -> int:
    """Images the foundation teacher was prompted on during training (each: one decoder call per prompted class)."""
    from uncol.methods.uncol.targets import TeacherTargets

    calls = [0]
    original = TeacherTargets.decode_sample

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TeacherTargets, "decode_sample", counted)
    Trainer(cfg, run, show_progress=False).fit()
    return calls[0]


@pytest.mark.parametrize("dims", [2, 3])
def test_each_image_is_decoded_once_per_window(tmp_path, fake_litemedsam, data2d, data3d, dims):  # noqa: F811
    data = data2d if dims == 2 else data3d
    every = uncol_config(tmp_path, data, dims, iterations=10, val_every=0, checkpoint_every=10)
    memo = uncol_config(tmp_path, data, dims, method={"foundation_refresh": 1.0}, iterations=10, val_every=0,
                        checkpoint_every=10)
    trainer = Trainer(memo, tmp_path / "memo", show_progress=False)
    trainer.fit()
    rows = read_log(tmp_path / "memo")
    decoded = column(rows, "foundation_decoded")
    assert len(decoded) == 5 and all(0.0 <= d <= 1.0 for d in decoded)
    drawn = [trainer.batches[s]["unlabeled_ids"] for s in range(5, 10)]
    unique = len({i for ids in drawn for i in ids})
    # One window over the 5 stage-2 steps: each drawn image decoded once, at its first draw.
    assert sum(d * len(ids) for d, ids in zip(decoded, drawn, strict=True)) == pytest.approx(unique)
    assert unique < sum(len(ids) for ids in drawn)  # some image was drawn twice: reused, not decoded
    Trainer(every, tmp_path / "every", show_progress=False).fit()
    assert column(read_log(tmp_path / "every"), "foundation_decoded") == [1.0] * 5


def test_memo_cuts_the_decoder_calls(tmp_path, fake_litemedsam, data2d, monkeypatch):  # noqa: F811
    common = {"iterations": 10, "val_every": 0, "checkpoint_every": 10}
    every = uncol_config(tmp_path, data2d, **common)
    memo = uncol_config(tmp_path, data2d, method={"foundation_refresh": 1.0}, **common)
    calls_every = stage2_decodes(monkeypatch, every, tmp_path / "every")
    calls_memo = stage2_decodes(monkeypatch, memo, tmp_path / "memo")
    assert calls_every == 5 * 2  # every unlabeled image of every stage-2 step
    assert 0 < calls_memo < calls_every


def test_resume_inside_a_window_is_identical(tmp_path, fake_litemedsam, data2d):  # noqa: F811
    cfg = uncol_config(tmp_path, data2d, method={"foundation_refresh": 1.0}, iterations=8, val_every=0,
                       checkpoint_every=1)
    ref, run = tmp_path / "ref", tmp_path / "run"
    Trainer(cfg, ref, show_progress=False).fit()
    Trainer(cfg, run, show_progress=False, stop_after=6).fit()  # stage 2 is steps 4-7: stopped mid-window
    state = torch.load(RunPaths(run).latest, map_location="cpu", weights_only=True)
    assert state["method_state"]["foundation_memo"]["window"] == 0  # the window's prompting teacher is kept
    Trainer(cfg, run, resume=True, show_progress=False).fit()
    assert_same_modules(ref, run)
    # The resumed run decoded again what the interrupted one had decoded (work, not results, differs).
    resumed, uninterrupted = column(read_log(run), "foundation_decoded"), column(read_log(ref), "foundation_decoded")
    assert resumed[:2] == uninterrupted[:2] and sum(resumed) >= sum(uninterrupted)


def test_windows_renew_the_prompting_teacher_and_the_decodes(tmp_path, fake_litemedsam, data2d):  # noqa: F811
    cfg = uncol_config(tmp_path, data2d, method={"foundation_refresh": 1.0})
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.setup()
    targets = trainer.method.targets_u
    memo = FoundationLabelMemo(targets, stage2_start=10, window_steps=2, seed=0)
    ema = trainer.method.ema.module
    view = ((True, False), 1, 0.0)
    first, fresh = memo.probabilities([0, 0], [view, view], ema, step=10, device=torch.device("cpu"))
    assert fresh == 1 and torch.equal(first[0], first[1])  # one decode for both draws of image 0
    again, fresh = memo.probabilities([0], [view], ema, step=11, device=torch.device("cpu"))
    assert fresh == 0 and torch.equal(again[0], first[0])
    kept = memo.prompting
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)  # the EMA teacher moves on; the window's prompting teacher does not
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), memo.prompting.state_dict().values(),
                                                 strict=True))
    _, fresh = memo.probabilities([0], [view], ema, step=12, device=torch.device("cpu"))
    assert fresh == 1 and memo.window == 1 and memo.prompting is not kept
    # The memo's map of a view is the decode on the un-augmented image, mapped by the view.
    plain, _ = memo.probabilities([0], [((False, False), 0, 0.0)], ema, step=12, device=torch.device("cpu"))
    from uncol.methods.uncol.targets import apply_view

    turned, _ = memo.probabilities([0], [view], ema, step=12, device=torch.device("cpu"))
    assert torch.allclose(turned[0], apply_view(plain[0], view, fill=1 / 3))
    state = memo.state()
    other = FoundationLabelMemo(targets, stage2_start=10, window_steps=2, seed=0)
    other.load_state(state, ema)
    assert other.window == 1
    restored, fresh = other.probabilities([0], [view], ema, step=13, device=torch.device("cpu"))
    assert fresh == 1 and torch.equal(restored, turned)  # decoded again, exactly as before


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_foundation_refresh_is_a_fraction(tmp_path, data2d, value):  # noqa: F811
    values = uncol_config(tmp_path, data2d).to_dict()
    values["method"]["uncol"]["foundation_refresh"] = value
    with pytest.raises(ConfigError, match="method.uncol.foundation_refresh"):
        config_from_dict(values)


def test_without_stage2_pseudo_labels_from_the_foundation_teacher_there_is_no_memo(tmp_path, fake_litemedsam, data2d):  # noqa: F811
    cfg = uncol_config(tmp_path, data2d, method={"foundation_refresh": 1.0, "pseudo_labels": "specialized"})
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.setup()
    assert trainer.method.memo is None and trainer.method.extra_state() == {}
    np.testing.assert_equal(len(trainer.method.targets_l.samples) > 0, True)
