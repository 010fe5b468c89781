"""Evaluation writes calibration and uncertainty-error metrics beside the overlap and surface ones."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fixtures_data import make_hdf5_dataset
from uncol import api
from uncol.case_uncertainty import mc_dropout_maps
from uncol.data.readers import load_case
from uncol.data.splits import load_splits
from uncol.evaluation import evaluate_run
from uncol.inference import predict_probabilities
from uncol.metrics import (
    NoDropoutError,
    RiskCoverageCurve,
    compute_case_metrics,
    compute_ece,
    compute_entropy,
    compute_error_detection_auroc,
    compute_mc_variance,
    compute_mutual_information,
    compute_nll,
    mc_dropout_mode,
)
from uncol.runs import load_weights
from uncol.uncertainty_evaluation import CURVE_POINTS, NO_DROPOUT, UncertaintyEvaluation, thin_curve


def _train(root: Path, name: str, dropout: float) -> Path:
    data = make_hdf5_dataset(root / "data", n_train=4, n_val=1, n_test=3, slices=3, shape=(32, 32), num_classes=3)
    values = {
        "name": name,
        "output_dir": str(root / "runs"),
        "data": dataclasses.asdict(data),
        "split": {"labeled": 2},
        "model": {"arch": "unet2d", "channels": [4, 8, 16], "dropout": dropout},
        "train": {"iterations": 3, "batch_size": 2, "patch_size": [32, 32], "val_every": 3, "threads": 1, "device": "cpu"},
    }
    cfg = root / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(values))
    api.train(str(cfg), evaluate_splits=(), show_progress=False)
    return root / "runs" / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny evaluated 2D runs on 3D volumes: without dropout and with ``model.dropout=0.3``."""
    root = tmp_path_factory.mktemp("eval_unc")
    out = {"plain": _train(root, "plain", 0.0), "dropout": _train(root, "dropout", 0.3)}
    for run in out.values():
        evaluate_run(run, "test", show_progress=False)
    return out


def _in(value: float | None, lo: float, hi: float) -> bool:
    return value is not None and lo <= value <= hi


def test_metrics_json_keeps_overlap_keys_and_adds_uncertainty(runs):
    run = runs["plain"]
    res = json.loads((run / "metrics_test.json").read_text())
    assert {"convention", "cases", "summary", "empty_cases", "split", "checkpoint", "checkpoint_step"} <= set(res)
    assert len(res["cases"]) == 3
    # the overlap values are those of the argmax prediction, as before the uncertainty metrics
    cfg, net, _ = load_weights(run, "best")
    case = load_splits(run / "splits.json").test[0]
    data = load_case(case, cfg.data)
    probs = predict_probabilities(net, data, cfg, torch.device("cpu"))
    expected = compute_case_metrics(probs.argmax(0).astype(np.uint8), data.label, 3, spacing=data.spacing)
    assert res["cases"][0]["case"] == case.case_id
    assert res["cases"][0]["metrics"]["1"]["dice"] == pytest.approx(expected.metrics["1"]["dice"])

    unc = res["uncertainty"]
    cal = unc["calibration"]
    assert _in(cal["ece"], 0, 1) and _in(cal["brier"], 0, 2) and _in(cal["nll"], 0, 30)
    assert set(cal["classwise_ece"]) == {"0", "1", "2"}
    assert all(_in(v, 0, 1) for v in cal["classwise_ece"].values())
    assert set(unc["error_detection"]) == {"entropy", "max_softmax"}
    for scores in unc["error_detection"].values():
        assert _in(scores["auroc"], 0, 1) and _in(scores["auprc"], 0, 1)
        assert scores["eaurc"] >= -1e-12 and scores["aurc"] >= scores["oracle_aurc"] - 1e-12
        assert scores["exact"] and scores["n_used"] == scores["n_voxels"] == 3 * 3 * 32 * 32
    assert unc["mc_dropout"] == {"available": False, "reason": NO_DROPOUT}
    assert len(unc["cases"]) == 3 and unc["case_summary"]["ece"]["n"] == 3
    # the pooled NLL equals the functional form on every voxel of every case together
    ps, ys = [], []
    for c in load_splits(run / "splits.json").test:
        d = load_case(c, cfg.data)
        ps.append(predict_probabilities(net, d, cfg, torch.device("cpu")).reshape(3, -1))
        ys.append(d.label.reshape(-1))
    assert cal["nll"] == pytest.approx(compute_nll(np.concatenate(ps, 1).T, np.concatenate(ys)), rel=1e-9)


def test_case_csv_has_one_row_per_case_matching_the_json(runs):
    run = runs["plain"]
    res = json.loads((run / "metrics_test.json").read_text())
    with open(run / "metrics_test_cases.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == [c["case"] for c in res["cases"]]
    for row, case, unc in zip(rows, res["cases"], res["uncertainty"]["cases"], strict=True):
        for metric in ("dice", "hd95"):
            value = case["metrics"]["2"][metric]
            assert (row[f"{metric}_2"] == "") if value is None else float(row[f"{metric}_2"]) == pytest.approx(value)
        assert float(row["ece"]) == pytest.approx(unc["ece"])
        assert float(row["classwise_ece_1"]) == pytest.approx(unc["classwise_ece"]["1"])
        assert 0 <= float(row["brier"]) <= 2
        assert row["entropy_auroc"] == "" or 0 <= float(row["entropy_auroc"]) <= 1
        assert "mc_variance_auroc" not in row


def test_uncertainty_json_holds_reliability_and_thinned_curves(runs):
    res = json.loads((runs["plain"] / "metrics_test.json").read_text())
    curves = json.loads((runs["plain"] / "uncertainty_test.json").read_text())
    rel = curves["reliability"]
    assert len(rel["edges"]) == len(rel["counts"]) + 1 == 16
    assert sum(rel["counts"]) == 3 * 3 * 32 * 32
    assert rel["ece"] == pytest.approx(res["uncertainty"]["calibration"]["ece"])
    for name in ("entropy", "max_softmax"):
        c = curves["risk_coverage"][name]
        assert 2 <= len(c["coverage"]) <= CURVE_POINTS + 2
        assert np.all(np.diff(c["coverage"]) > 0) and c["coverage"][-1] == pytest.approx(1.0)
        assert c["risk"][-1] == pytest.approx(res["uncertainty"]["error_detection"][name]["error_rate"])
    assert curves["mc_dropout"]["available"] is False


def test_network_with_dropout_gets_mc_dropout_scores(runs):
    run = runs["dropout"]
    res = json.loads((run / "metrics_test.json").read_text())
    unc = res["uncertainty"]
    assert unc["mc_dropout"]["available"] is True and unc["mc_dropout"]["passes"] >= 2
    for name in ("mc_variance", "mc_mutual_information"):
        assert _in(unc["error_detection"][name]["auroc"], 0, 1)
        assert name in json.loads((run / "uncertainty_test.json").read_text())["risk_coverage"]
    with open(run / "metrics_test_cases.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert "mc_mutual_information_aurc" in header


def test_mc_dropout_maps_equal_the_stacked_sample_formulas(runs):
    cfg, net, _ = load_weights(runs["dropout"], "best")
    data = load_case(load_splits(runs["dropout"] / "splits.json").test[0], cfg.data)
    dev = torch.device("cpu")
    maps = mc_dropout_maps(net, data, cfg, dev, passes=4, seed=7)
    with torch.random.fork_rng(devices=[]), mc_dropout_mode(net):
        torch.manual_seed(7)
        samples = np.stack([predict_probabilities(net, data, cfg, dev) for _ in range(4)])
    np.testing.assert_allclose(maps["mc_variance"], compute_mc_variance(samples), atol=1e-6)
    np.testing.assert_allclose(maps["mc_mutual_information"], compute_mutual_information(samples), atol=1e-5)
    assert maps["mc_variance"].max() > 0  # dropout was really active
    assert not net.training  # modes restored
    plain_cfg, plain_net, _ = load_weights(runs["plain"], "best")
    with pytest.raises(NoDropoutError):
        mc_dropout_maps(plain_net, data, plain_cfg, dev, passes=2)


def test_pooled_values_are_those_of_all_voxels_together():
    rng = np.random.default_rng(0)
    ev = UncertaintyEvaluation(3, {"available": False, "reason": NO_DROPOUT})
    probs, labels = [], []
    for i, shape in enumerate([(5, 6), (4, 7)]):
        logits = rng.normal(size=(3, *shape))
        p = np.exp(logits) / np.exp(logits).sum(0)
        y = rng.integers(0, 3, shape)
        maps = {"entropy": compute_entropy(p), "max_softmax": 1 - p.max(0)}
        row = ev.add_case(f"c{i}", p, y, maps)
        assert row["ece"] == pytest.approx(compute_ece(p, y))
        probs.append(p.reshape(3, -1))
        labels.append(y.reshape(-1))
    p_all, y_all = np.concatenate(probs, 1).T, np.concatenate(labels)
    summary = ev.summary()
    assert summary["calibration"]["ece"] == pytest.approx(compute_ece(p_all, y_all))
    errors = p_all.argmax(1) != y_all
    auroc = compute_error_detection_auroc(compute_entropy(p_all, class_axis=1), errors)
    assert summary["error_detection"]["entropy"]["auroc"] == pytest.approx(auroc)
    with pytest.raises(ValueError, match="max_softmax"):
        ev.add_case("c9", p, y, {"entropy": compute_entropy(p)})


def test_thin_curve_keeps_points_of_the_curve_and_both_ends():
    n = 5000
    coverage = np.arange(1, n + 1) / n
    curve = RiskCoverageCurve(coverage, np.linspace(0, 0.3, n), np.arange(n, dtype=float))
    thin = thin_curve(curve, points=100)
    assert len(thin["coverage"]) <= 102
    assert thin["coverage"][0] == coverage[0] and thin["coverage"][-1] == 1.0
    idx = np.searchsorted(coverage, thin["coverage"])
    np.testing.assert_allclose(np.asarray(thin["risk"]), curve.risk[idx])
    assert max(np.diff(thin["coverage"])) <= 1 / 99 + 1 / n
    empty = thin_curve(RiskCoverageCurve(np.zeros(0), np.zeros(0), np.zeros(0)))
    assert empty == {"coverage": [], "risk": [], "threshold": []}
    assert not math.isnan(thin["risk"][-1])
