"""The run folder's configuration comparison (:mod:`uncol.runs`)."""

from __future__ import annotations

from uncol.config import Config
from uncol.runs import STUDENT_OPTIONS, config_differences


def test_student_options_do_not_matter_for_a_unet() -> None:
    a, b = Config(), Config()
    b.model.vit_dim = a.model.vit_dim * 2
    b.model.student_backbone = "unet"
    assert a.model.arch == "unet2d"
    assert config_differences(a, b) == []


def test_student_options_matter_for_the_student() -> None:
    a, b = Config(), Config()
    a.model.arch = b.model.arch = "uncol_student2d"
    b.model.vit_dim = a.model.vit_dim * 2
    assert config_differences(a, b) == ["model.vit_dim"]


def test_an_architecture_change_shows_every_difference() -> None:
    a, b = Config(), Config()
    b.model.arch = "uncol_student2d"
    b.model.vit_dim = a.model.vit_dim * 2
    assert config_differences(a, b) == ["model.arch", "model.vit_dim"]
    assert "model.vit_dim" in STUDENT_OPTIONS
