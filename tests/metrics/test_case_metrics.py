"""Per-case metrics, empty-mask policies, summary and table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from uncol.metrics import CaseResult, compute_case_metrics, compute_hd95, format_table, summarize

METRICS = ("dice", "jaccard", "hd95", "asd")


def _label_maps() -> tuple[np.ndarray, np.ndarray]:
    """Class 1 in both (10x10 square vs. the same shifted 2 columns), class 2 only in the reference
    (a miss), class 3 only in the prediction; class 4 nowhere (num_classes=5)."""
    pred = np.zeros((40, 40), dtype=np.int64)
    ref = np.zeros((40, 40), dtype=np.int64)
    ref[5:15, 5:15] = 1
    pred[5:15, 7:17] = 1
    ref[25:30, 25:30] = 2
    pred[30:35, 5:10] = 3
    return pred, ref


def _all(value: float | None) -> dict[str, float | None]:
    return dict.fromkeys(METRICS, value)


def test_standard_skip_zero() -> None:
    pred, ref = _label_maps()
    res = compute_case_metrics(pred, ref, 5, spacing=(1.0, 2.0))
    c1 = res.metrics["1"]
    assert c1["dice"] == pytest.approx(0.8)  # overlap 10x8 of two 10x10 squares
    assert c1["jaccard"] == pytest.approx(80 / 120)
    assert c1["hd95"] == pytest.approx(4.0)  # 2 columns of 2.0 mm
    assert c1["asd"] is not None and 0 < c1["asd"] < 4.0
    assert res.metrics["2"] == {"dice": 0.0, "jaccard": 0.0, "hd95": None, "asd": None}
    assert res.metrics["3"] == {"dice": 0.0, "jaccard": 0.0, "hd95": None, "asd": None}
    assert res.metrics["4"] == _all(None)
    assert res.empty == {"1": None, "2": "ref_only", "3": "pred_only", "4": "both"}


def test_standard_perfect_and_one_skip() -> None:
    pred, ref = _label_maps()
    res = compute_case_metrics(pred, ref, 5, empty_both="perfect", empty_one="skip")
    assert res.metrics["4"] == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    assert res.metrics["2"] == _all(None)
    assert res.metrics["3"] == _all(None)
    assert res.metrics["1"]["hd95"] == pytest.approx(2.0)  # no spacing: voxel units
    assert res.empty == {"1": None, "2": "ref_only", "3": "pred_only", "4": "both"}


@pytest.mark.parametrize(("empty_both", "empty_one"), [("skip", "zero"), ("perfect", "skip")])
def test_medpy_convention_ignores_policies_and_spacing(empty_both: str, empty_one: str) -> None:
    pred, ref = _label_maps()
    res = compute_case_metrics(
        pred, ref, 5, spacing=(1.0, 2.0), convention="medpy", empty_both=empty_both, empty_one=empty_one
    )
    # SSL4MIS: nothing predicted -> every metric 0 (a miss, and a class absent from both).
    assert res.metrics["2"] == _all(0.0)
    assert res.metrics["4"] == _all(0.0)
    # Predicted but absent from the reference: Dice 0, no distance.
    assert res.metrics["3"] == {"dice": 0.0, "jaccard": 0.0, "hd95": None, "asd": None}
    assert res.metrics["1"]["hd95"] == pytest.approx(compute_hd95(pred == 1, ref == 1, convention="medpy"))
    assert res.metrics["1"]["hd95"] == pytest.approx(2.0)  # voxel units despite the spacing
    assert res.empty == {"1": None, "2": "ref_only", "3": "pred_only", "4": "both"}


def test_3d_case_and_integral_float_labels() -> None:
    ref = np.zeros((10, 12, 8), dtype=np.uint8)
    ref[2:6, 3:9, 2:5] = 1
    pred = ref.astype(np.float32)
    res = compute_case_metrics(pred, ref, 2, spacing=(1.0, 1.0, 3.0))
    assert res.metrics["1"] == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}


def test_output_never_holds_nan() -> None:
    pred, ref = _label_maps()
    for conv in ("standard", "medpy"):
        res = compute_case_metrics(pred, ref, 5, convention=conv)
        for values in res.metrics.values():
            assert all(v is None or (isinstance(v, float) and not math.isnan(v)) for v in values.values())


def test_input_errors() -> None:
    a = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        compute_case_metrics(a, np.zeros((4, 5), dtype=np.int64), 2)
    with pytest.raises(ValueError, match="num_classes=2"):
        compute_case_metrics(a + 2, a, 2)
    with pytest.raises(ValueError, match="labels"):
        compute_case_metrics(a - 1, a, 2)
    with pytest.raises(ValueError, match="integer"):
        compute_case_metrics(a + 0.5, a, 2)
    with pytest.raises(ValueError, match="num_classes"):
        compute_case_metrics(a, a, 1)
    with pytest.raises(ValueError, match="empty_both"):
        compute_case_metrics(a, a, 2, empty_both="zero")
    with pytest.raises(ValueError, match="empty_one"):
        compute_case_metrics(a, a, 2, empty_one="perfect")
    with pytest.raises(ValueError, match="convention"):
        compute_case_metrics(a, a, 2, convention="nnunet")
    with pytest.raises(ValueError, match="spacing"):
        compute_case_metrics(a, a, 2, spacing=(1.0, 1.0, 1.0))


def _result(values: dict[str, tuple[float | None, ...]], empty: dict[str, str | None]) -> CaseResult:
    return CaseResult(metrics={c: dict(zip(METRICS, v, strict=True)) for c, v in values.items()}, empty=empty)


def test_summarize_shape_means_and_counts() -> None:
    results = [
        ("a", _result({"1": (0.8, 0.6, 2.0, 1.0), "2": (0.6, 0.4, 4.0, 3.0)}, {"1": None, "2": None})),
        # class 2 missed under the standard/zero policy: Dice 0 counted, distances left out.
        (
            "b",
            _result({"1": (1.0, 1.0, 0.0, 0.0), "2": (0.0, 0.0, None, None)}, {"1": None, "2": "ref_only"}),
        ),
        # class 1 absent from both, skipped: nothing counted.
        ("c", _result({"1": (None, None, None, None), "2": (0.5, 0.2, 6.0, 2.0)}, {"1": "both", "2": None})),
    ]
    out = summarize(results, 3, "standard")
    json.dumps(out, allow_nan=False)  # JSON-able, no NaN
    assert set(out) == {"convention", "cases", "summary", "empty_cases"}
    assert out["convention"] == "standard"
    assert [c["case"] for c in out["cases"]] == ["a", "b", "c"]
    assert out["cases"][1]["metrics"]["2"] == {"dice": 0.0, "jaccard": 0.0, "hd95": None, "asd": None}
    assert out["cases"][2]["metrics"]["1"]["dice"] is None

    s = out["summary"]
    assert set(s) == {"1", "2", "mean"}
    assert set(s["1"]) == set(METRICS)
    assert s["1"]["dice"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.1), "n": 2}
    assert s["2"]["dice"] == {
        "mean": pytest.approx(1.1 / 3),
        "std": pytest.approx(np.std([0.6, 0.0, 0.5])),
        "n": 3,
    }
    # None is excluded, not averaged in as 0.
    assert s["2"]["hd95"] == {"mean": pytest.approx(5.0), "std": pytest.approx(1.0), "n": 2}
    # "mean": per case over the defined classes, then over cases.
    assert s["mean"]["dice"]["mean"] == pytest.approx(np.mean([0.7, 0.5, 0.5]))
    assert s["mean"]["dice"]["std"] == pytest.approx(np.std([0.7, 0.5, 0.5]))
    assert s["mean"]["hd95"] == {
        "mean": pytest.approx(np.mean([3.0, 0.0, 6.0])),
        "std": pytest.approx(np.std([3.0, 0.0, 6.0])),
        "n": 3,
    }

    assert out["empty_cases"] == {
        "1": {"both": 1, "pred_only": 0, "ref_only": 0},
        "2": {"both": 0, "pred_only": 0, "ref_only": 1},
        "total": 2,
    }


def test_summarize_end_to_end_with_undefined_class() -> None:
    pred, ref = _label_maps()
    out = summarize([("x", compute_case_metrics(pred, ref, 5))], 5, "standard")
    assert out["summary"]["4"]["dice"] == {"mean": None, "std": None, "n": 0}
    assert out["summary"]["2"]["dice"] == {"mean": 0.0, "std": 0.0, "n": 1}
    assert out["summary"]["2"]["hd95"]["n"] == 0
    assert out["empty_cases"]["total"] == 3
    json.dumps(out, allow_nan=False)


def test_summarize_errors() -> None:
    r = _result({"1": (1.0, 1.0, 0.0, 0.0)}, {"1": None})
    with pytest.raises(ValueError, match="more than once"):
        summarize([("a", r), ("a", r)], 2, "standard")
    with pytest.raises(ValueError, match="class"):
        summarize([("a", r)], 3, "standard")


def test_format_table() -> None:
    results = [
        ("a", _result({"1": (0.8, 0.6, 2.0, 1.0), "2": (0.6, 0.4, 4.0, 3.0)}, {"1": None, "2": None})),
        (
            "b",
            _result({"1": (1.0, 1.0, 0.0, 0.0), "2": (0.0, 0.0, None, None)}, {"1": None, "2": "ref_only"}),
        ),
    ]
    out = summarize(results, 3, "standard")
    table = format_table(out, ["background", "RV", "LV"])
    lines = table.splitlines()
    assert "Dice (%)" in table and "HD95 (mm)" in table
    rv = next(line for line in lines if line.startswith("RV"))
    assert "90.00 ± 10.00" in rv  # Dice in percent
    assert "80.00 ± 20.00" in rv  # Jaccard in percent
    lv = next(line for line in lines if line.startswith("LV"))
    assert "4.00 ± 0.00 (n=1)" in lv  # distances left out for the miss
    assert lv.split()[-1] == "1"  # one ref_only
    assert lines[-1].startswith("mean")
    assert format_table(out, ["RV", "LV"]) == table
    assert "n/a" in format_table(
        summarize(
            [("c", _result({"1": (None,) * 4, "2": (None,) * 4}, {"1": "both", "2": "both"}))], 3, "medpy"
        )
    )
    with pytest.raises(ValueError, match="class names"):
        format_table(out, ["only one"])
