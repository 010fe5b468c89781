"""The benchmark grid file: a typed, validated description of methods x labeled amounts x seeds.

One grid file describes one dataset. Every problem raises :class:`~uncol.errors.ConfigError` naming
the grid file and the offending key (``methods.mean_teacher.config``, ``budget.cpu_seconds``, ...).
The format is documented in ``docs/benchmark.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from uncol.benchmark.state import STATE_NAME
from uncol.config import parse_override
from uncol.errors import ConfigError

# Names become folder names and CSV values: keep them to characters that are safe everywhere.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_KEYS = (
    "name", "out", "archive", "seeds", "seed_keys", "labeled", "reference", "compare_to", "budget", "set", "methods",
)
_METHOD_KEYS = ("config", "labeled", "set", "iterations", "seeds", "branch_from", "cpu_per_step")
_BUDGET_KEYS = ("cpu_seconds", "calibration_steps", "validations", "calibration_from")
# The calibration excludes this many first steps (one-time warm-up) from the measured cost.
CALIBRATION_WARMUP_STEPS = 2
DEFAULT_CALIBRATION_STEPS = 20


@dataclass(frozen=True)
class BudgetSpec:
    """The CPU-time budget that every run of the grid gets.

    Attributes:
        cpu_seconds: CPU seconds of training steps per run.
        calibration_steps: steps of the throwaway run that measures a (method, labeled) pair's cost.
        validations: validations per run (``train.val_every = iterations // validations``), so that
            every method is selected on validation equally often whatever its iteration count; 0 keeps
            each config's ``train.val_every``.
        calibration_from: another grid's state file whose measured step costs this grid reuses, scaled to
            its own budget (the same grid at another budget trains every pair proportionally more or fewer
            steps, not steps from a new measurement on another machine or load); pairs it lacks are
            calibrated as usual. ``None``: every pair is calibrated here.
    """

    cpu_seconds: float
    calibration_steps: int = DEFAULT_CALIBRATION_STEPS
    validations: int = 0
    calibration_from: Path | None = None


@dataclass(frozen=True)
class MethodSpec:
    """One method entry of the grid.

    Attributes:
        name: the entry's name (CSV ``method`` column, run folder names); need not be a method name.
        config: the YAML config it trains with.
        labeled: the ``split.labeled`` values it runs at.
        overrides: ``key=value`` overrides applied after the grid's own.
        iterations: fixed ``train.iterations`` (no budget calibration), or ``None``.
        seeds: the grid seeds this entry runs at (a diagnostic entry may need fewer), or ``None`` for all.
        branch_from: another entry whose run of the same labeled amount and seed this entry's run
            continues from the checkpoint where its options start to matter (UnCoL's stage switch: an
            ablation of stage 2 shares stage 1), with the other entry's step count; ``None``: from scratch.
        cpu_per_step: a measured CPU cost per step that replaces the calibration run (for methods whose
            step cost grows as they train, which a short calibration from scratch underestimates), or
            ``None``.
    """

    name: str
    config: Path
    labeled: tuple[float, ...]
    overrides: tuple[str, ...]
    iterations: int | None
    seeds: tuple[int, ...] | None = None
    branch_from: str | None = None
    cpu_per_step: float | None = None

    @property
    def calibrated(self) -> bool:
        """Whether this entry's step count comes from a calibration run of its own."""
        return self.iterations is None and self.cpu_per_step is None and self.branch_from is None

    def runs_at(self, labeled: float, seed: int) -> bool:
        """Whether the grid trains this entry at ``labeled`` with ``seed``."""
        return labeled in self.labeled and (self.seeds is None or seed in self.seeds)


@dataclass(frozen=True)
class GridSpec:
    """A benchmark grid (see ``docs/benchmark.md``).

    Attributes:
        path: the grid file.
        name: dataset name (CSV ``dataset`` column).
        out: the grid folder.
        seeds: seed values; each run sets every key of ``seed_keys`` to its seed.
        seed_keys: dotted config keys that a seed sets.
        reference: the method entry that the paired differences compare against, or ``None``.
        budget: the per-run CPU budget, or ``None`` when every method fixes its iterations.
        overrides: ``key=value`` overrides applied to every run.
        methods: the method entries in file order.
        archive: folder keeping the finished runs' records and the grid state beyond the grid folder
            (``uncol.benchmark.archive``), or ``None``.
        compare_to: further method entries that get a paired-difference table of their own (e.g. the
            strongest baseline), beside the one to ``reference``.
    """

    path: Path
    name: str
    out: Path
    seeds: tuple[int, ...]
    seed_keys: tuple[str, ...]
    reference: str | None
    budget: BudgetSpec | None
    overrides: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    archive: Path | None = None
    compare_to: tuple[str, ...] = ()

    def method(self, name: str) -> MethodSpec:
        """The method entry called ``name``."""
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def labeled_values(self) -> tuple[float, ...]:
        """Every labeled amount of any method, ascending."""
        return tuple(sorted({v for m in self.methods for v in m.labeled}))

    def controlled_keys(self) -> tuple[str, ...]:
        """Config keys the grid sets for each run; ``set`` entries may not touch them."""
        keys = ["name", "output_dir", "split.labeled", "train.iterations", *self.seed_keys]
        if self.budget is not None and self.budget.validations:
            keys.append("train.val_every")
        return tuple(keys)


def format_labeled(value: float) -> str:
    """A labeled amount as written in grid files and folder names: ``7``, ``0.1``, ``1``."""
    return f"{value:g}"


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file.

    Relative ``config`` paths are looked up in the current directory first, then next to the grid
    file; ``out`` (default ``runs/benchmark/<name>``) is relative to the current directory.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or invalid value, naming file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (name, seeds, labeled, methods, ...)")
    return _Parser(path).grid(raw)


class _Parser:
    """Validation of one grid file's content; every error names ``path`` and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def grid(self, raw: dict[str, Any]) -> GridSpec:
        self._no_unknown(raw, _TOP_KEYS, "")
        name = self._name(raw.get("name"), "name")
        out = raw.get("out", f"runs/benchmark/{name}")
        if not isinstance(out, str) or not out.strip():
            raise self.error("out", f"expected a folder path, got {out!r}")
        archive = raw.get("archive")
        if archive is not None and (not isinstance(archive, str) or not archive.strip()):
            raise self.error("archive", f"expected a folder path, got {archive!r}")
        seeds = self._int_list(raw.get("seeds"), "seeds")
        seed_keys = self._str_list(raw.get("seed_keys", ["train.seed"]), "seed_keys")
        if not seed_keys:
            raise self.error("seed_keys", "at least one config key (e.g. train.seed)")
        default_labeled = None if raw.get("labeled") is None else self._labeled(raw["labeled"], "labeled")
        budget = None if raw.get("budget") is None else self._budget(raw["budget"])
        overrides = self._overrides(raw.get("set", []), "set")
        methods_raw = raw.get("methods")
        if not isinstance(methods_raw, dict) or not methods_raw:
            raise self.error("methods", "expected a mapping of method entries (name: {config: ...})")
        methods = tuple(
            self._method(str(k), v, default_labeled, budget, seeds) for k, v in methods_raw.items()
        )
        self._same_labeled_kind(methods)
        self._branch_sources(methods)
        reference = raw.get("reference", "supervised" if "supervised" in methods_raw else None)
        if reference is not None and reference not in methods_raw:
            raise self.error("reference", f"{reference!r} is not a method of this grid ({', '.join(methods_raw)})")
        compare_to = self._str_list(raw.get("compare_to", []), "compare_to")
        for other in compare_to:
            if other not in methods_raw:
                raise self.error("compare_to", f"{other!r} is not a method of this grid ({', '.join(methods_raw)})")
        spec = GridSpec(
            path=path_of(self.path), name=name, out=Path(out), seeds=seeds, seed_keys=seed_keys,
            reference=reference, budget=budget, overrides=overrides, methods=methods,
            archive=None if archive is None else Path(archive), compare_to=compare_to,
        )
        self._no_controlled_overrides(spec)
        return spec

    # -- pieces ------------------------------------------------------------------------------------------

    def _no_unknown(self, raw: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in raw:
            if key not in allowed:
                raise self.error(f"{prefix}{key}", f"unknown key; valid keys here: {', '.join(allowed)}")

    def _name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not _SAFE_NAME.match(value):
            raise self.error(key, f"expected a name of letters, digits, '_', '-', '.', got {value!r}")
        return value

    def _int_list(self, value: Any, key: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty list of integers, got {value!r}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.error(key, f"expected integers, got {v!r}")
        if len(set(value)) != len(value):
            raise self.error(key, f"values repeat: {value}")
        return tuple(value)

    def _str_list(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return tuple(v.strip() for v in value)

    def _labeled(self, value: Any, key: str) -> tuple[float, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty list of split.labeled values, got {value!r}")
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise self.error(key, f"expected numbers (a count > 1 or a ratio in (0, 1]), got {v!r}")
            if v <= 0 or (v > 1 and not float(v).is_integer()):
                raise self.error(key, f"{v} is neither a whole count > 1 nor a ratio in (0, 1]")
            out.append(float(v))
        if len(set(out)) != len(out):
            raise self.error(key, f"values repeat: {value}")
        return tuple(out)

    def _overrides(self, value: Any, key: str) -> tuple[str, ...]:
        items = self._str_list(value, key)
        for item in items:
            try:
                parse_override(item)
            except ConfigError as e:
                raise self.error(key, str(e)) from None
        return items

    def _budget(self, value: Any) -> BudgetSpec:
        if not isinstance(value, dict):
            raise self.error("budget", f"expected a mapping (cpu_seconds, calibration_steps, validations), got {value!r}")
        self._no_unknown(value, _BUDGET_KEYS, "budget.")
        cpu = value.get("cpu_seconds")
        if isinstance(cpu, bool) or not isinstance(cpu, int | float) or cpu <= 0:
            raise self.error("budget.cpu_seconds", f"expected a number of CPU seconds > 0, got {cpu!r}")
        steps = value.get("calibration_steps", DEFAULT_CALIBRATION_STEPS)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= CALIBRATION_WARMUP_STEPS:
            raise self.error(
                "budget.calibration_steps",
                f"expected an integer > {CALIBRATION_WARMUP_STEPS} (the first {CALIBRATION_WARMUP_STEPS} are "
                f"warm-up and not measured), got {steps!r}",
            )
        validations = value.get("validations", 0)
        if isinstance(validations, bool) or not isinstance(validations, int) or validations < 0:
            raise self.error("budget.validations", f"expected an integer >= 0, got {validations!r}")
        source = None
        if value.get("calibration_from") is not None:
            source = self._state_path(value["calibration_from"], "budget.calibration_from")
        return BudgetSpec(float(cpu), steps, validations, source)

    def _method(
        self,
        name: str,
        value: Any,
        default_labeled: tuple[float, ...] | None,
        budget: BudgetSpec | None,
        grid_seeds: tuple[int, ...],
    ) -> MethodSpec:
        key = f"methods.{name}"
        self._name(name, key)
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping with at least 'config', got {value!r}")
        self._no_unknown(value, _METHOD_KEYS, f"{key}.")
        config = self._config_path(value.get("config"), f"{key}.config")
        if value.get("labeled") is not None:
            labeled = self._labeled(value["labeled"], f"{key}.labeled")
        elif default_labeled is not None:
            labeled = default_labeled
        else:
            raise self.error(f"{key}.labeled", "no labeled amounts: give 'labeled' here or at the top of the grid")
        iterations = value.get("iterations")
        if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
            raise self.error(f"{key}.iterations", f"expected an integer >= 1, got {iterations!r}")
        if iterations is None and budget is None and value.get("branch_from") is None and value.get("cpu_per_step") is None:
            raise self.error(
                f"{key}.iterations",
                "no iteration count: fix 'iterations' for this method or give the grid a budget (budget.cpu_seconds)",
            )
        seeds = None
        if value.get("seeds") is not None:
            seeds = self._int_list(value["seeds"], f"{key}.seeds")
            extra = sorted(set(seeds) - set(grid_seeds))
            if extra:
                raise self.error(f"{key}.seeds", f"{extra} not among the grid's seeds {list(grid_seeds)}")
        overrides = self._overrides(value.get("set", []), f"{key}.set")
        branch_from = value.get("branch_from")
        if branch_from is not None:
            branch_from = self._name(branch_from, f"{key}.branch_from")
            if iterations is not None:
                raise self.error(f"{key}.iterations", "a branched entry trains the step count of its branch_from entry")
        cost = value.get("cpu_per_step")
        if cost is not None:
            if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost > 0:
                raise self.error(f"{key}.cpu_per_step", f"expected CPU seconds per step > 0, got {cost!r}")
            if budget is None or iterations is not None or branch_from is not None:
                raise self.error(
                    f"{key}.cpu_per_step", "sets the step count from the grid's budget: needs budget.cpu_seconds, and "
                    "neither iterations nor branch_from in the same entry",
                )
            cost = float(cost)
        return MethodSpec(name, config, labeled, overrides, iterations, seeds, branch_from, cost)

    def _branch_sources(self, methods: tuple[MethodSpec, ...]) -> None:
        # The source's run of the same cell must come first in the grid's order and start from scratch.
        seen: dict[str, MethodSpec] = {}
        for m in methods:
            if m.branch_from is not None:
                key = f"methods.{m.name}.branch_from"
                src = seen.get(m.branch_from)
                if src is None:
                    names = [n.name for n in methods]
                    problem = "an entry cannot branch from itself" if m.branch_from == m.name else (
                        f"{m.branch_from!r} must be an entry written before this one ({', '.join(names)})"
                    )
                    raise self.error(key, problem)
                if src.branch_from is not None:
                    raise self.error(key, f"{src.name!r} branches itself; branch from the entry it branches from")
                missing = sorted(set(m.labeled) - set(src.labeled))
                if missing:
                    raise self.error(key, f"{src.name!r} does not run at labeled {', '.join(f'{v:g}' for v in missing)}")
                if src.seeds is not None and (m.seeds is None or not set(m.seeds) <= set(src.seeds)):
                    raise self.error(key, f"{src.name!r} runs at seeds {list(src.seeds)} only; give this entry a subset")
            seen[m.name] = m

    def _config_path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected the path of a YAML config, got {value!r}")
        p = Path(value)
        candidates = [p] if p.is_absolute() else [p, self.path.parent / p]
        for c in candidates:
            if c.is_file():
                return path_of(c)
        tried = " and ".join(str(c) for c in candidates)
        raise self.error(key, f"config file not found (tried {tried})")

    def _state_path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected the path of a grid folder or its {STATE_NAME}, got {value!r}")
        p = Path(value)
        candidates = [p] if p.is_absolute() else [p, self.path.parent / p]
        for c in candidates:
            found = c / STATE_NAME if c.is_dir() else c
            if found.is_file():
                if found.name != STATE_NAME:
                    raise self.error(key, f"{found}: not a grid state file (expected a grid folder or its {STATE_NAME})")
                return path_of(found)
        tried = " and ".join(str(c) for c in candidates)
        raise self.error(key, f"no grid state found (tried {tried}, a grid folder or its {STATE_NAME})")

    def _same_labeled_kind(self, methods: tuple[MethodSpec, ...]) -> None:
        # Counts and ratios cannot share the figure's x axis or the tables' ordering.
        values = {v for m in methods for v in m.labeled}
        if any(v > 1 for v in values) and any(v <= 1 for v in values):
            raise self.error(
                "labeled", f"mixes patient counts (> 1) and ratios (<= 1): {sorted(values)}; use one kind per grid"
            )

    def _no_controlled_overrides(self, spec: GridSpec) -> None:
        controlled = set(spec.controlled_keys())
        sources = [("set", spec.overrides)] + [(f"methods.{m.name}.set", m.overrides) for m in spec.methods]
        for key, items in sources:
            for item in items:
                dotted = parse_override(item)[0]
                if dotted in controlled:
                    raise self.error(key, f"{dotted} is set by the grid for each run and cannot be overridden")


def path_of(p: Path) -> Path:
    """``p`` made absolute without resolving symbolic links (error messages keep the user's names)."""
    return p if p.is_absolute() else Path.cwd() / p


def shown_path(p: Path) -> str:
    """``p`` as written into committed records (tables, grid state): relative to the working directory (the
    repository root, where grids are run from) when it lies under it, so that no machine's own folder
    layout ends up in them; as given otherwise."""
    try:
        return str(path_of(p).relative_to(Path.cwd()))
    except ValueError:
        return str(p)
