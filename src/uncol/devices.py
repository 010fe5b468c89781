"""Device selection shared by the training engine and the foundation teacher."""

from __future__ import annotations

import torch

from uncol.errors import ConfigError


def select_device(name: str, option: str = "train.device") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:N`` to a device, with a clear error when unavailable.

    Args:
        name: the configured device.
        option: the config option it came from (named in errors).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option}: {name!r} requested but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{option}: unsupported device type {dev.type!r}")
    return dev
