"""What ``uncol predict`` returns: the files written for each input, and the inputs that failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PredictedFile", "PredictionFailure", "PredictionResult"]


@dataclass(frozen=True)
class PredictedFile:
    """The outputs of one input.

    Attributes:
        input: the image file.
        mask: the label map written.
        entropy: the entropy map, when asked for.
        probabilities: the class probability map, when asked for.
    """

    input: Path
    mask: Path
    entropy: Path | None = None
    probabilities: Path | None = None

    @property
    def paths(self) -> list[Path]:
        """Every file written for this input."""
        return [p for p in (self.mask, self.entropy, self.probabilities) if p is not None]


@dataclass(frozen=True)
class PredictionFailure:
    """An input that produced no (complete) output, and why."""

    input: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.input}: {self.reason}"


@dataclass
class PredictionResult:
    """Outcome of :func:`uncol.prediction.predict_files`.

    Attributes:
        outputs: one entry per input that was predicted and written, in input order.
        failures: one entry per input that failed (unreadable, corrupt, wrong channels, ...).
        threads: the CPU threads torch used.
    """

    outputs: list[PredictedFile] = field(default_factory=list)
    failures: list[PredictionFailure] = field(default_factory=list)
    threads: int = 0

    @property
    def ok(self) -> bool:
        """Whether every input was predicted."""
        return not self.failures

    @property
    def masks(self) -> list[Path]:
        """The masks written, in input order."""
        return [o.mask for o in self.outputs]

    @property
    def written(self) -> list[Path]:
        """Every file written (masks and maps)."""
        return [p for o in self.outputs for p in o.paths]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""

        def _s(p: Path | None) -> str | None:
            return None if p is None else str(p)

        return {
            "outputs": [
                {"input": str(o.input), "mask": str(o.mask), "entropy": _s(o.entropy), "probabilities": _s(o.probabilities)}
                for o in self.outputs
            ],
            "failures": [{"input": str(f.input), "reason": f.reason} for f in self.failures],
            "threads": self.threads,
        }
