"""The contract between a training method and the engine.

A method says how a batch becomes named losses (``train_step``) and what happens after each optimiser
step (``after_step``, e.g. an EMA update); the engine owns everything else: the loop, optimiser,
schedule, mixed precision, validation, checkpoints and logs. This mirrors nnU-Net's trainer variants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from uncol.config import Config
from uncol.errors import ConfigError

if TYPE_CHECKING:
    from uncol.data.training import SampleSet


@dataclass(frozen=True)
class StepContext:
    """Where training stands when a step runs.

    Attributes:
        step: zero-based index of the current optimiser step.
        iterations: total number of steps of the run.
        device: the device the batch lives on.
    """

    step: int
    iterations: int
    device: torch.device

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / max(1, self.iterations))


@dataclass(frozen=True)
class BatchPhase:
    """The batch of the steps from ``start`` on, until the next phase starts.

    Attributes:
        start: first step of the phase.
        labeled: labeled images per step and process.
        unlabeled: unlabeled images per step and process (0: the batch carries none).
    """

    start: int
    labeled: int
    unlabeled: int


@dataclass(frozen=True)
class DataNeeds:
    """What a method needs from the data pipeline in every step's batch.

    The engine always provides ``image`` ``(B, C, *spatial)``, ``label`` ``(B, *spatial)``, the drawn
    samples' ``ids`` and the views' ``geometry`` (flips, quarter turns, free rotation angle; for mapping
    cached per-sample targets onto the view), with ``B = train.batch_size`` unless ``phases`` say otherwise.

    Attributes:
        unlabeled_batch_size: unlabeled images per step; > 0 adds ``unlabeled_image``,
            ``unlabeled_ids`` and ``unlabeled_geometry``, drawn from the split's unlabeled cases.
        views: augmented views of each drawn image: with ``v > 1`` every drawn sample appears ``v``
            times in a row (``image[i * v + j]``, the same sample under independently drawn
            augmentations), in both the labeled and the unlabeled stream.
        crop_multiple: where patches are cropped from larger samples (3D ``train.pad_to``), their origins
            are multiples of it, so that maps of whole samples on a coarser grid crop exactly like the image.
        phases: for methods whose stages read different batches (a pretraining stage that reads no
            unlabeled images): the batch per phase, the first starting at step 0; they replace
            ``train.batch_size`` and ``unlabeled_batch_size``, so that no step draws and augments images it
            does not read. A step's batch is the first ``labeled`` (``unlabeled``) images of the full batch's
            seeded stream (``StepBatches``): a phase that reads fewer images reads the same ones.
    """

    unlabeled_batch_size: int = 0
    views: int = 1
    crop_multiple: int = 1
    phases: tuple[BatchPhase, ...] = ()

    def __post_init__(self) -> None:
        if self.phases:
            starts = [p.start for p in self.phases]
            if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
                raise ValueError(f"DataNeeds.phases: starts must begin at 0 and increase, got {starts}")
            if any(p.labeled < 1 or p.unlabeled < 0 for p in self.phases):
                raise ValueError(f"DataNeeds.phases: every step needs >= 1 labeled image, got {self.phases}")

    @property
    def reads_unlabeled(self) -> bool:
        """Whether any step's batch carries unlabeled images."""
        if self.phases:
            return any(p.unlabeled > 0 for p in self.phases)
        return self.unlabeled_batch_size > 0


def run_phases(iterations: int, *phases: BatchPhase) -> tuple[BatchPhase, ...]:
    """The phases a run of ``iterations`` steps goes through, of a method's stages in order: a phase starting at
    or after the end is dropped, and one that the next replaces at the same step (a stage of no steps) too.

    Args:
        iterations: ``train.iterations``.
        *phases: one per stage, the first starting at 0, starts non-decreasing.
    """
    kept = [p for p in phases if p.start == 0 or p.start < iterations]
    return tuple(p for i, p in enumerate(kept) if i + 1 == len(kept) or kept[i + 1].start > p.start)


def phase_totals(phases: tuple[BatchPhase, ...], steps: int) -> dict[str, int]:
    """Images per process the first ``steps`` steps of ``phases`` hold, ``{"labeled": n, "unlabeled": n}``."""
    totals = {"labeled": 0, "unlabeled": 0}
    for i, phase in enumerate(phases):
        end = phases[i + 1].start if i + 1 < len(phases) else steps
        n = max(0, min(end, steps) - phase.start)
        totals["labeled"] += n * phase.labeled
        totals["unlabeled"] += n * phase.unlabeled
    return totals


def check_range(
    key: str, value: float, low: float, high: float | None = None, *, open_low: bool = False,
    open_high: bool = False,
) -> None:
    """Raise a :class:`~uncol.errors.ConfigError` naming ``key`` unless ``value`` lies in the interval.

    For a method's :meth:`TrainingMethod.validate_config`: ``check_range("method.bcp.box_fraction", v, 0, 1,
    open_low=True)`` accepts (0, 1]; without ``high`` the interval is unbounded above (``>= low``).

    Args:
        key: the dotted option name the message starts with.
        value: the option's value.
        low: the lower bound, included unless ``open_low``.
        high: the upper bound, included unless ``open_high``; ``None`` for none.
        open_low: exclude ``low``.
        open_high: exclude ``high``.

    Raises:
        ConfigError: ``"<key>: must be in (0, 1], got <value>"`` or ``"<key>: must be >= 0, got <value>"``.
    """
    above = value > low if open_low else value >= low
    below = high is None or (value < high if open_high else value <= high)
    if above and below:
        return
    if high is None:
        wanted = f"{'>' if open_low else '>='} {low:g}"
    else:
        wanted = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    raise ConfigError(f"{key}: must be {wanted}, got {value}")


class TrainingMethod:
    """Base class of training methods: subclass it, set ``name`` (and ``options_class``), and register the
    class with :func:`uncol.methods.registry.register_method`.

    Args:
        cfg: the run configuration.
        network: the segmentation network being trained (the student).
    """

    #: the name a configuration selects the method by (``method.name``).
    name = "base"
    #: dataclass of the method's own options (section ``method.<name>``, fields declared with
    #: :func:`uncol.config.option`); None for a method without options.
    options_class: type | None = None

    def __init__(self, cfg: Config, network: nn.Module) -> None:
        self.cfg = cfg
        self.network = network
        #: the method's options (an instance of ``options_class``), or None.
        self.options: Any = cfg.method.options

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Check the method's options against each other and the rest of the configuration.

        Called by :func:`uncol.config.validate`; types are already checked. Raise
        :class:`~uncol.errors.ConfigError` naming the dotted option (``method.<name>.<option>``).
        """

    @classmethod
    def speed_options(cls) -> frozenset[str]:
        """Dotted options of this method that change how fast it computes, never what: a resumed run may change them."""
        return frozenset()

    @classmethod
    def batch_phases(cls, cfg: Config) -> tuple[BatchPhase, ...]:
        """The batch per phase of a run of ``cfg`` (:attr:`DataNeeds.phases`), for a method whose stages read
        different batches; the default ``()``: the same batch in every step.

        A classmethod of the configuration alone, so that :meth:`data_needs` (what is drawn) and
        :meth:`images_trained` (what a finished run's records say it trained on) read one definition.
        """
        return ()

    @classmethod
    def images_trained(cls, cfg: Config, steps: int, drawn: Mapping[str, int]) -> dict[str, int]:
        """Images the first ``steps`` steps of a run trained on, of the ``drawn`` ones (``images_seen``).

        Without :meth:`batch_phases`, every drawn image. With them, the phases' images, times the
        processes that drew a batch each (distributed runs): computed from the configuration, so that runs
        recorded before the phases existed, which drew the full batch in every step, read the same.

        Args:
            cfg: the run's configuration.
            steps: steps done.
            drawn: images drawn into those steps' batches, ``{"labeled": n, "unlabeled": n}``.

        Returns:
            ``{"labeled": n, "unlabeled": n}``.
        """
        phases = cls.batch_phases(cfg)
        if not phases:
            return {"labeled": int(drawn.get("labeled", 0)), "unlabeled": int(drawn.get("unlabeled", 0))}
        per_process = phase_totals(phases, steps)
        # Processes: the labeled draws over one process's; floor, because runs recorded before the phases
        # drew the full batch in every step (up to train.batch_size / the smallest phase's more per process).
        world = max(1, int(drawn.get("labeled", 0)) // max(1, per_process["labeled"]))
        return {k: world * v for k, v in per_process.items()}

    def data_needs(self) -> DataNeeds:
        """What the method needs in each batch (unlabeled images, views); the default: the batches of
        :meth:`batch_phases`, labeled images only without them."""
        return DataNeeds(phases=self.batch_phases(self.cfg))

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the method trains on unlabeled images."""
        return self.data_needs().reads_unlabeled

    def setup_data(self, labeled: SampleSet, unlabeled: SampleSet | None, run_dir: Path, bar: Callable[..., Any]) -> None:
        """Called once the training samples are in memory, before the optimiser is built.

        Methods precompute per-sample data here (e.g. teacher targets) and may create trainable
        modules (e.g. distillation projections) that :meth:`modules` / :meth:`parameters` then return.

        Args:
            labeled: the labeled training samples.
            unlabeled: the unlabeled ones (``None`` when the method uses none).
            run_dir: the run folder.
            bar: factory of progress bars (``bar(total=..., desc=...)``, a context manager).
        """

    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state is checkpointed, by name."""
        return {"network": self.network}

    def parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates."""
        return (p for p in self.network.parameters() if p.requires_grad)

    def train(self, mode: bool = True) -> None:
        """Put the trainable modules in train (or eval) mode."""
        self.network.train(mode)

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Turn a batch into named losses; the key ``"loss"`` is the total that is back-propagated.

        Other entries (detached scalars) are logged as they are, e.g. ``loss_sup`` or ``ramp``.
        """
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """Called after every optimiser step (EMA updates and the like)."""

    def lr_factor(self, step: int, schedule: Callable[[int, int], float]) -> float:
        """Learning-rate multiplier of ``train.lr`` at ``step``.

        Args:
            step: zero-based optimiser step.
            schedule: ``train.schedule`` as a function ``(step, length) -> factor`` over a phase of ``length``
                steps (poly, cosine or constant).

        Returns:
            The factor; by default one schedule over the whole run. A method with phases that the paper
            trains as separate runs (UnCoL's two stages) restarts it per phase.
        """
        return schedule(step, self.cfg.train.iterations)

    def deferred_options(self) -> tuple[int, frozenset[str]]:
        """Options that no step before a given one reads.

        A run may branch from another run's checkpoint taken at or before that step with other
        values of these options (``uncol train --branch-from``): what was computed up to the
        checkpoint is then exactly what the new configuration computes, so the branch equals a run
        from scratch. The engine keeps a checkpoint of that step (``checkpoints/step<N>.pt``).

        Returns:
            ``(step, keys)``: the first step that may read them, and their dotted names.
        """
        return 0, frozenset()

    def inference_network(self) -> nn.Module:
        """The network used for validation, evaluation and prediction."""
        return self.network

    def state_dict(self) -> dict[str, Any]:
        """State of all modules (weights of the network, EMA copies, ...)."""
        return {name: m.state_dict() for name, m in self.modules().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        for name, m in self.modules().items():
            m.load_state_dict(state[name])

    def extra_state(self) -> dict[str, Any]:
        """State beyond the modules' weights that a resumed run needs to continue exactly (tensors and plain
        data only: checkpoints load with ``weights_only=True``); empty by default."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state` (``{}`` for checkpoints written without it); called after
        :meth:`setup_data`."""
