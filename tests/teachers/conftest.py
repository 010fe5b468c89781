"""Fixtures of the teacher tests (the stand-in teacher lives in tests/fake_teacher.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fake_teacher import FakeTeacher
from uncol import teachers
from uncol.config import TeacherConfig


@pytest.fixture
def fake_teacher() -> Callable[..., FakeTeacher]:
    """Factory of stand-in teachers (keyword arguments as :class:`FakeTeacher`)."""
    return FakeTeacher


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch, fake_teacher: Callable[..., FakeTeacher]) -> list[FakeTeacher]:
    """Make teacher.name=litemedsam build the stand-in teacher; returns the list of teachers built.

    tests/uncol_with_fake_teacher.py builds the same stand-in in child processes.
    """
    built: list[FakeTeacher] = []

    def factory(cfg: TeacherConfig) -> FakeTeacher:
        t = fake_teacher(size=64, token_grid=4, batch_size=cfg.batch_size)
        built.append(t)
        return t

    monkeypatch.setitem(teachers.TEACHER_FACTORIES, "litemedsam", factory)
    return built
