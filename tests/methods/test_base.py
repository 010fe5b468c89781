"""The helpers of the method contract (uncol.methods.base)."""

from __future__ import annotations

import pytest

from uncol.errors import ConfigError
from uncol.methods import check_range


@pytest.mark.parametrize(
    ("value", "kwargs"),
    [
        (0.0, {"low": 0, "high": 1}),
        (1.0, {"low": 0, "high": 1}),
        (0.5, {"low": 0, "high": 1, "open_low": True, "open_high": True}),
        (1.0, {"low": 0, "high": 1, "open_low": True}),
        (0, {"low": 0}),
        (1e9, {"low": 1}),
    ],
)
def test_check_range_accepts_values_inside(value: float, kwargs: dict) -> None:
    check_range("method.x.opt", value, **kwargs)


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (-0.1, {"low": 0, "high": 1}, "method.x.opt: must be in [0, 1], got -0.1"),
        (1.5, {"low": 0, "high": 1}, "method.x.opt: must be in [0, 1], got 1.5"),
        (0.0, {"low": 0, "high": 1, "open_low": True}, "method.x.opt: must be in (0, 1], got 0.0"),
        (1.0, {"low": 0, "high": 1, "open_low": True, "open_high": True}, "method.x.opt: must be in (0, 1), got 1.0"),
        (-1, {"low": 0}, "method.x.opt: must be >= 0, got -1"),
        (0, {"low": 1}, "method.x.opt: must be >= 1, got 0"),
        (0.0, {"low": 0, "open_low": True}, "method.x.opt: must be > 0, got 0.0"),
        (float("nan"), {"low": 0, "high": 1}, "method.x.opt: must be in [0, 1], got nan"),
    ],
)
def test_check_range_names_the_option_and_the_interval(value: float, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_range("method.x.opt", value, **kwargs)
    assert str(err.value) == message


def test_every_method_reports_a_range_error_through_config_validation() -> None:
    """The methods' validate_config use the helper: an out-of-range option of each is refused by name."""
    from uncol.config import load_config

    for name, key, bad in [
        ("bcp", "box_fraction", 0.0),
        ("mean_teacher", "ema_decay", 1.0),
        ("ua_mt", "uncertainty_passes", 0),
        ("supervised", "copy_paste_prob", 2.0),
        ("uncol", "foundation_refresh", -0.5),
    ]:
        with pytest.raises(ConfigError, match=rf"method\.{name}\.{key}: must be"):
            load_config(None, [f"method.name={name}", f"method.{name}.{key}={bad}"])
