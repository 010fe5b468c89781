"""The allocator settings for long CPU runs (uncol.allocator)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from uncol import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning applies on Linux only")
def test_tunes_glibc_unless_told_not_to(monkeypatch):
    for env in allocator._ENV:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.delenv("UNCOL_MALLOC_TUNING", raising=False)
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not a glibc system")
    assert allocator.tune_malloc() is True
    assert allocator.tune_malloc() is True  # idempotent
    monkeypatch.setenv("UNCOL_MALLOC_TUNING", "0")
    assert allocator.tune_malloc() is False


def test_respects_the_users_variables_and_other_c_libraries(monkeypatch):
    from types import SimpleNamespace

    calls = []

    def mallopt(param, value):
        calls.append(param)
        return 1

    fake_libc = SimpleNamespace(mallopt=mallopt)

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("UNCOL_MALLOC_TUNING", raising=False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: fake_libc)
    for env in allocator._ENV:
        monkeypatch.setenv(env, "1")
    assert allocator.tune_malloc() is False and calls == []  # the user chose every value
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    assert allocator.tune_malloc() is True and calls == [allocator._M_TOP_PAD]

    def no_glibc(name):
        raise OSError(name)

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_glibc)
    assert allocator.tune_malloc() is False
