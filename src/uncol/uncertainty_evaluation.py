"""Calibration and uncertainty-error metrics of an evaluation, case by case and pooled over cases.

Evaluation (:mod:`uncol.evaluation`) hands every case's probabilities, labels and uncertainty maps
to an :class:`UncertaintyEvaluation`, which scores the case and pools its voxels with
:mod:`uncol.metrics`' cumulative classes (ECE bins, NLL and Brier sums, a bounded uniform voxel
sample for AUROC/AUPRC and risk-coverage). Every voxel of every case counts, background included,
as in Lu, Hong and Yang (arXiv:2512.13101, Sec. 4.5). The results go to three places:

* :meth:`UncertaintyEvaluation.summary`: the ``"uncertainty"`` entry of ``RUN/metrics_<split>.json``;
* :meth:`UncertaintyEvaluation.case_row`: the calibration columns of ``RUN/metrics_<split>_cases.csv``;
* :meth:`UncertaintyEvaluation.curves`: ``RUN/uncertainty_<split>.json`` (reliability diagram,
  risk-coverage curves thinned to a few hundred points).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from uncol.case_uncertainty import DETERMINISTIC_SCORES, MC_SCORES
from uncol.metrics import (
    DEFAULT_N_BINS,
    BrierScore,
    ClasswiseExpectedCalibrationError,
    ExpectedCalibrationError,
    NegativeLogLikelihood,
    RiskCoverageCurve,
    UncertaintyErrorMetric,
    UncertaintyErrorScores,
)

__all__ = [
    "CURVE_POINTS",
    "EVAL_MAX_VOXELS",
    "NO_DROPOUT",
    "SCORE_FIELDS",
    "UncertaintyEvaluation",
    "thin_curve",
]

#: Voxels pooled per uncertainty score for the dataset AUROC/AUPRC/AURC (about 17 MB per score);
#: below it the dataset values are exact, above they are estimates from a uniform sample.
EVAL_MAX_VOXELS = 1_000_000
#: Most points kept of a risk-coverage curve in ``uncertainty_<split>.json``.
CURVE_POINTS = 300
#: What the outputs say when MC dropout cannot be computed.
NO_DROPOUT = "not available: the network has no dropout"
#: Uncertainty-error scores written per case and per dataset.
SCORE_FIELDS = ("auroc", "auprc", "aurc", "eaurc")


def _num(value: float) -> float | None:
    """A JSON-safe float: NaN (undefined) becomes ``None``."""
    value = float(value)
    return None if math.isnan(value) else value


def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, population std and count of the defined values."""
    v = [float(x) for x in values if not math.isnan(float(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}


def thin_curve(curve: RiskCoverageCurve, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """At most ``points`` points of a risk-coverage curve, evenly spread in coverage.

    A curve has one point per distinct uncertainty value (up to millions). For each coverage
    ``j / points`` the first point reaching it is kept, plus the first point, so the curve drawn
    from the kept points lies on the full one and ends at coverage 1 with the overall error rate.

    Args:
        curve: the full curve.
        points: the most points kept.

    Returns:
        ``{"coverage", "risk", "threshold"}`` lists of equal length.
    """
    n = curve.coverage.size
    if n == 0:
        return {"coverage": [], "risk": [], "threshold": []}
    targets = np.linspace(0.0, 1.0, points)
    idx = np.searchsorted(curve.coverage, targets, side="left")
    idx = np.unique(np.clip(np.concatenate([[0], idx, [n - 1]]), 0, n - 1))
    return {
        "coverage": curve.coverage[idx].tolist(),
        "risk": curve.risk[idx].tolist(),
        "threshold": curve.thresholds[idx].tolist(),
    }


def _scores_dict(s: UncertaintyErrorScores, exact: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "auroc": _num(s.auroc),
        "auprc": _num(s.auprc),
        "aurc": _num(s.aurc),
        "eaurc": _num(s.eaurc),
        "oracle_aurc": _num(s.oracle_aurc),
        "error_rate": _num(s.error_rate),
        "n_voxels": s.n_voxels,
        "n_errors": s.n_errors,
        "n_used": s.n_used,
    }
    if exact is not None:
        out["exact"] = exact
    return out


class UncertaintyEvaluation:
    """Scores cases one by one and pools them into dataset calibration and uncertainty-error values.

    Args:
        num_classes: classes including background.
        mc_dropout: ``{"available": True, "passes": T, ...}`` when MC-dropout maps will be given with
            every case, else ``{"available": False, "reason": ...}``; recorded as is in the outputs.
        n_bins: confidence bins of ECE and the reliability diagram.
        max_voxels: voxels pooled per score for the dataset AUROC/AUPRC/AURC/curves.
        seed: seed of that pool's subsampling.
    """

    def __init__(
        self,
        num_classes: int,
        mc_dropout: Mapping[str, Any],
        n_bins: int = DEFAULT_N_BINS,
        max_voxels: int = EVAL_MAX_VOXELS,
        seed: int = 0,
    ) -> None:
        self.num_classes = num_classes
        self.mc_dropout = dict(mc_dropout)
        self.scores = DETERMINISTIC_SCORES + (MC_SCORES if self.mc_dropout.get("available") else ())
        self.n_bins = n_bins
        self._ece = ExpectedCalibrationError(n_bins)
        self._classwise = ClasswiseExpectedCalibrationError(n_bins)
        self._nll = NegativeLogLikelihood()
        self._brier = BrierScore()
        self._error = {name: UncertaintyErrorMetric(max_voxels=max_voxels, seed=seed) for name in self.scores}
        self._cases: list[dict[str, Any]] = []

    def add_case(
        self, case_id: str, probs: np.ndarray, labels: np.ndarray, maps: Mapping[str, np.ndarray]
    ) -> dict[str, Any]:
        """Score one case and pool its voxels.

        Args:
            case_id: the case's name.
            probs: class probabilities ``(K, *spatial)``.
            labels: reference labels ``(*spatial)``.
            maps: uncertainty maps ``(*spatial)``, one per name in :attr:`scores`.

        Returns:
            The case's values (``ece``, ``classwise_ece`` per class id, ``nll``, ``brier``,
            ``error_rate`` and per score ``{auroc, auprc, aurc, eaurc}``); undefined values ``None``.

        Raises:
            ValueError: when a map of :attr:`scores` is missing or shapes disagree.
        """
        missing = [name for name in self.scores if name not in maps]
        if missing:
            raise ValueError(f"case {case_id}: uncertainty map(s) {', '.join(missing)} missing")
        errors = probs.argmax(axis=0) != labels
        row: dict[str, Any] = {
            "case": case_id,
            "ece": _num(self._ece(probs, labels)),
            "classwise_ece": {str(c): _num(v) for c, v in enumerate(self._classwise(probs, labels))},
            "nll": _num(self._nll(probs, labels)),
            "brier": _num(self._brier(probs, labels)),
            "error_rate": float(np.count_nonzero(errors)) / errors.size,
        }
        for name in self.scores:
            s = self._error[name](maps[name], errors)
            row[name] = {f: _num(getattr(s, f)) for f in SCORE_FIELDS}
        self._cases.append(row)
        return row

    @staticmethod
    def case_row(values: Mapping[str, Any]) -> dict[str, float | None]:
        """Flat CSV columns of one case's values from :meth:`add_case` (the case name left out)."""
        row: dict[str, float | None] = {k: values[k] for k in ("ece", "nll", "brier", "error_rate")}
        for c, v in values["classwise_ece"].items():
            row[f"classwise_ece_{c}"] = v
        for name, scores in values.items():
            if isinstance(scores, Mapping) and name != "classwise_ece":
                for f in SCORE_FIELDS:
                    row[f"{name}_{f}"] = scores[f]
        return row

    def summary(self) -> dict[str, Any]:
        """The ``"uncertainty"`` entry of ``metrics_<split>.json``: pooled values, per-case values
        and their mean/std over cases, and whether MC dropout was available."""
        classwise = self._classwise.aggregate()
        error_detection = {
            name: _scores_dict(metric.aggregate(), exact=metric.exact) for name, metric in self._error.items()
        }
        per_case_fields = ["ece", "nll", "brier"] + [f"{name}_{f}" for name in self.scores for f in SCORE_FIELDS]
        flat = [self.case_row(c) for c in self._cases]
        case_summary = {
            f: _stats([math.nan if r[f] is None else r[f] for r in flat]) for f in per_case_fields
        }
        fg = [v for v in classwise[1:] if not math.isnan(v)]
        return {
            "voxels": "every voxel of every case, background included",
            "calibration": {
                "ece": _num(self._ece.aggregate()),
                "classwise_ece": {str(c): _num(v) for c, v in enumerate(classwise)},
                "classwise_ece_foreground_mean": float(np.mean(fg)) if fg else None,
                "nll": _num(self._nll.aggregate()),
                "brier": _num(self._brier.aggregate()),
                "n_bins": self.n_bins,
            },
            "error_detection": error_detection,
            "mc_dropout": self.mc_dropout,
            "cases": self._cases,
            "case_summary": case_summary,
        }

    def curves(self) -> dict[str, Any]:
        """``uncertainty_<split>.json`` data: the pooled reliability diagram and risk-coverage curves."""
        diagram = self._ece.reliability_diagram()
        curves = {}
        for name, metric in self._error.items():
            s = metric.aggregate()
            curves[name] = {
                **thin_curve(metric.risk_coverage_curve()),
                "aurc": _num(s.aurc),
                "eaurc": _num(s.eaurc),
                "oracle_aurc": _num(s.oracle_aurc),
                "error_rate": _num(s.error_rate),
                "n_used": s.n_used,
                "exact": metric.exact,
            }
        return {
            "reliability": {
                "edges": diagram.edges.tolist(),
                "counts": diagram.counts.tolist(),
                "confidence": [_num(v) for v in diagram.confidence],
                "accuracy": [_num(v) for v in diagram.accuracy],
                "ece": _num(diagram.ece),
            },
            "risk_coverage": curves,
            "mc_dropout": self.mc_dropout,
        }
