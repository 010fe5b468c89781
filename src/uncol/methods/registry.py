"""The open registry of training methods: a method is found by its name, as nnU-Net finds trainers.

Built-in methods register when :mod:`uncol.methods` is imported. A method of your own registers the
same way from your own module, which the configuration names in ``method.module`` so that every
command (training, evaluation, prediction of its runs) imports it first::

    # my_methods.py
    from dataclasses import dataclass
    from uncol.config import option
    from uncol.methods import StepContext, TrainingMethod, register_method

    @dataclass
    class MyOptions:
        weight: float = option(0.1, "Weight of my extra loss.")

    @register_method
    class MyMethod(TrainingMethod):
        name = "my_method"
        options_class = MyOptions

        def train_step(self, batch, ctx):
            ...

    # config.yaml:  method: {name: my_method, module: my_methods, my_method: {weight: 0.2}}
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from uncol.errors import ConfigError

if TYPE_CHECKING:
    from uncol.config import Config
    from uncol.methods.base import TrainingMethod

_METHODS: dict[str, type[TrainingMethod]] = {}
M = TypeVar("M", bound="type[TrainingMethod]")


def register_method(cls: M) -> M:
    """Class decorator: make a :class:`~uncol.methods.base.TrainingMethod` subclass available by its ``name``.

    Raises:
        ValueError: the name is empty, not an identifier, or taken by another class.
    """
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name.isidentifier() or name in ("name", "module", "options"):
        raise ValueError(f"{cls.__qualname__}: a method's name must be an identifier other than name/module/options, got {name!r}")
    known = _METHODS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"method name {name!r} is taken by {known.__module__}.{known.__qualname__}")
    _METHODS[name] = cls
    return cls


def _load_builtins() -> None:
    import uncol.methods  # noqa: F401 - registers the built-in methods


def method_names() -> list[str]:
    """Names of every registered method (built-in ones first)."""
    _load_builtins()
    return list(_METHODS)


def get_method(name: str) -> type[TrainingMethod]:
    """The method class registered as ``name``.

    Raises:
        ConfigError: no method of that name (the message lists the known ones).
    """
    _load_builtins()
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(
            f"method.name: unknown method {name!r}; known: {', '.join(_METHODS)} "
            "(a method of your own is registered by the module named in method.module)"
        ) from None


def images_trained(cfg: Config, steps: int, drawn: Mapping[str, int]) -> dict[str, int]:
    """Images a run of ``cfg`` trained on in ``steps`` steps, of the ``drawn`` ones (``images_seen`` of its
    ``summary.json``): :meth:`TrainingMethod.images_trained` of its method."""
    return get_method(cfg.method.name).images_trained(cfg, steps, drawn)


def summary_images_trained(cfg: Config, summary: Mapping[str, Any]) -> dict[str, int] | None:
    """:func:`images_trained` of a run from its ``summary.json`` (``steps_done``, ``images_seen``), or ``None``
    when the summary records no images. From the config, not the summary's own ``images_trained``, so that
    summaries written before it existed read the same."""
    seen = summary.get("images_seen")
    return images_trained(cfg, int(summary.get("steps_done") or 0), seen) if seen else None


def import_method_module(spec: str) -> None:
    """Import the module named by ``method.module``: a dotted module name, or the path of a ``.py`` file.

    Raises:
        ConfigError: the module cannot be found or fails to import (the message names it and why).
    """
    if not spec:
        return
    try:
        if spec.endswith(".py") or "/" in spec:
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"method.module: no such file {spec!r}")
            mod_name = f"uncol_user_method_{path.stem}_{abs(hash(str(path))) % 10**8}"
            if mod_name in sys.modules:
                return
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ConfigError(f"method.module: {spec!r} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
        else:
            importlib.import_module(spec)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported with the module's name
        raise ConfigError(f"method.module: importing {spec!r} failed: {type(e).__name__}: {e}") from None
