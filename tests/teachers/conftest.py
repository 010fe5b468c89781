"""Fixtures of the teacher tests (the stand-in teacher lives in tests/fake_teacher.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fake_teacher import FakeTeacher


@pytest.fixture
def fake_teacher() -> Callable[..., FakeTeacher]:
    """Factory of stand-in teachers (keyword arguments as :class:`FakeTeacher`)."""
    return FakeTeacher
