"""Write a planned configuration as YAML whose comments say why each value was chosen.

Only the options that were planned or differ from their defaults are written, section by section in
the order of :class:`uncol.config.Config` (the rest keep their defaults, docs/configuration.md); the
method's own section is written in full, each option with its help text, so its knobs are in view.
The file is read back with :func:`uncol.config.load_config` before it replaces anything, and must
give the planned configuration exactly.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from uncol.atomic import atomic_write
from uncol.config import Config, load_config
from uncol.errors import ConfigError
from uncol.methods.registry import get_method

LINE = 110


def _value(value: Any) -> str:
    """A value as YAML flow text (lists inline, strings quoted where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return text.removesuffix("\n...\n").rstrip("\n")  # a bare scalar document ends with "..."


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, LINE - len(indent) - 2)]


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")


def _section_lines(name: str, values: Mapping[str, Any], defaults: Mapping[str, Any], notes: Mapping[str, str]) -> list[str]:
    keys = [k for k in values if f"{name}.{k}" in notes or values[k] != defaults.get(k)]
    if not keys:
        return []
    lines = [f"{name}:"]
    for k in keys:
        note = notes.get(f"{name}.{k}")
        if note:
            lines += _comment(note, "  ")
        lines.append(f"  {k}: {_value(values[k])}")
    return lines


def _method_lines(cfg: Config, notes: Mapping[str, str]) -> list[str]:
    name = cfg.method.name
    lines = ["method:"]
    if notes.get("method.name"):
        lines += _comment(notes["method.name"], "  ")
    lines.append(f"  name: {_value(name)}")
    options = cfg.method.options
    if options is None:
        return lines
    lines.append(f"  {name}:")
    for f in dataclasses.fields(options):
        why = notes.get(f"method.{name}.{f.name}") or _first_sentence(f.metadata.get("help", ""))
        lines += _comment(why, "    ")
        lines.append(f"    {f.name}: {_value(getattr(options, f.name))}")
    return lines


def render_config(cfg: Config, notes: Mapping[str, str], header: Sequence[str] = ()) -> str:
    """The commented YAML text of ``cfg``.

    Args:
        cfg: the configuration.
        notes: dotted option -> why its value was chosen (a comment above the option).
        header: lines of the comment block at the top.
    """
    get_method(cfg.method.name)
    values, defaults = cfg.to_dict(), Config().to_dict()
    lines = [f"# {h}" if h else "#" for h in header]
    for key in ("name", "output_dir"):
        lines.append(f"{key}: {_value(values[key])}")
    for f in dataclasses.fields(Config):
        if f.name in ("name", "output_dir"):
            continue
        if f.name == "method":
            lines += [""] + _method_lines(cfg, notes)
            continue
        section = _section_lines(f.name, values[f.name], defaults[f.name], notes)
        if section:
            lines += [""] + section
    return "\n".join(lines) + "\n"


def write_config(path: str | Path, cfg: Config, notes: Mapping[str, str], header: Sequence[str] = ()) -> Path:
    """Write the commented YAML of ``cfg`` atomically, after checking that it loads back as ``cfg``.

    Raises:
        ConfigError: the text does not load back to the same configuration (naming the options).
    """
    path = Path(path)
    text = render_config(cfg, notes, header)

    def write(tmp: Path) -> None:
        tmp.write_text(text)
        loaded = load_config(tmp).to_dict()
        expected = cfg.to_dict()
        if loaded != expected:
            differ = sorted(k for k in expected if loaded.get(k) != expected[k])
            raise ConfigError(f"{path}: the written config does not read back as planned (sections {', '.join(differ)})")

    return atomic_write(path, write)
