"""benchmarks/pseudo_label_quality.py: which checkpoint --checkpoint scores."""

from __future__ import annotations

import pytest

from benchmark_scripts import benchmark_scripts


def test_checkpoint_choice(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "latest.pt").write_bytes(b"x")
    with benchmark_scripts("pseudo_label_quality") as (script,):
        assert script.checkpoint_path(tmp_path, "latest") == ckpts / "latest.pt"
        with pytest.raises(SystemExit, match="found 0"):
            script.checkpoint_path(tmp_path, "switch")
        (ckpts / "step70.pt").write_bytes(b"x")
        assert script.checkpoint_path(tmp_path, "switch") == ckpts / "step70.pt"
        assert script.checkpoint_path(tmp_path, str(ckpts / "step70.pt")) == ckpts / "step70.pt"
        with pytest.raises(SystemExit, match="no such checkpoint"):
            script.checkpoint_path(tmp_path, str(tmp_path / "nope.pt"))
