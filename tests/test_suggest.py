"""``uncol suggest``: which unlabeled scans to annotate next (uncol.suggest, uncol.suggestions), its labeled
list fed back through the split, and its section of the report.

Constructed cases replace the network's probabilities by a function of the image (a scan of constant
intensity 0 is certain, mid-grey is uncertain), so the expected ranking is known; the end-to-end tests
use a tiny supervised run trained for three steps on the ACDC-like HDF5 fixture (patients of two
slices). The foundation teacher is the stand-in of tests/fake_teacher.py, registered as ``litemedsam``.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import uncol.suggest as suggest_module
from fake_teacher import FakeTeacher
from fixtures_data import make_hdf5_dataset, truncate
from uncol import api, teachers
from uncol.atomic import atomic_torch_save, atomic_write_text
from uncol.cli import main
from uncol.config import Config, config_from_dict
from uncol.data.index import discover
from uncol.data.splits import load_splits, make_splits
from uncol.data.types import CaseData
from uncol.errors import ConfigError, UncolError
from uncol.models import build_network
from uncol.report import build_report
from uncol.report.suggestions import find_suggestions
from uncol.runs import CHECKPOINT_VERSION, RunPaths
from uncol.suggest import suggest
from uncol.suggestions.disagreement import TeacherDisagreement
from uncol.suggestions.ranking import percentile_ranks, rank_groups
from uncol.suggestions.scores import ScanScore
from uncol.suggestions.table import GROUP_COLUMNS, SCAN_COLUMNS, read_suggestions

LN2 = math.log(2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fake_litemedsam(monkeypatch: pytest.MonkeyPatch) -> list[FakeTeacher]:
    """Replace LiteMedSAM by the stand-in teacher; returns the instances built."""
    built: list[FakeTeacher] = []

    def factory(tc):
        t = FakeTeacher(token_grid=tc.token_grid, size=64)
        built.append(t)
        return t

    monkeypatch.setitem(teachers.TEACHER_FACTORIES, "litemedsam", factory)
    return built


def image_run(root: Path, **sections: dict) -> Path:
    """A run folder of a 2D two-class network for PNG images (config and seeded untrained weights)."""
    values: dict = {
        "name": "img",
        "output_dir": str(root.parent),
        "data": {"format": "image2d", "root": "unused", "in_channels": 1, "num_classes": 2},
        "model": {"arch": "unet2d", "channels": [4, 8]},
        "train": {"patch_size": [32, 32], "threads": 1, "device": "cpu"},
    }
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value}
    cfg = config_from_dict(values)
    torch.manual_seed(0)
    net = build_network(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.train.patch_size)
    paths = RunPaths(root)
    atomic_write_text(paths.config, cfg.to_yaml())
    state = {"version": CHECKPOINT_VERSION, "kind": "weights", "network": net.state_dict(), "config": cfg.to_dict()}
    atomic_torch_save(state, paths.best)
    return root


def grey_png(path: Path, level: int, size: tuple[int, int] = (24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, level, dtype=np.uint8)).save(path)
    return path


def intensity_probabilities(
    network: torch.nn.Module, cases: Sequence[CaseData], cfg: Config, device: torch.device, **_: object
) -> list[np.ndarray]:
    """Constructed 'predictions': foreground probability = intensity / 255 (0 certain, 128 near 0.5)."""
    out = []
    for data in cases:
        p = np.clip(data.image[0] / 255.0, 0.0, 1.0).astype(np.float32)
        out.append(np.stack([1.0 - p, p]))
    return out


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


# -- ranking ---------------------------------------------------------------------------------------


def _scan(case: str, group: str, entropy: float, disagreement: float | None = None) -> ScanScore:
    return ScanScore(case, group, (Path(f"{case}.png"),), "file", entropy, entropy, disagreement)


def test_percentile_ranks_scale_to_unit_interval_with_shared_ties():
    np.testing.assert_allclose(percentile_ranks([0.3, 0.1, 0.2]), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(percentile_ranks([0.1, 0.5, 0.5]), [0.0, 0.75, 0.75])
    np.testing.assert_allclose(percentile_ranks([7.0]), [1.0])


def test_groups_rank_by_their_scans_mean_and_combine_entropy_and_disagreement_ranks():
    scans = [
        _scan("a1", "A", 0.9, 0.0), _scan("a2", "A", 0.5, 0.2),  # A: entropy 0.7 (highest), disagreement 0.1 (lowest)
        _scan("b1", "B", 0.6, 0.9),                                # B: 0.6 (middle), 0.9 (highest)
        _scan("c1", "C", 0.0, 0.5),                                # C: certain (lowest), 0.5 (middle)
        _scan("d1", "D", 0.4, None),                               # D: entropy alone (rank 1/3)
    ]
    ranked = rank_groups(scans)
    by_group = {g.group: g for g in ranked}
    assert by_group["A"].cases == ("a1", "a2") and by_group["A"].mean_entropy == pytest.approx(0.7)
    assert by_group["A"].disagreement == pytest.approx(0.1)
    # entropy ranks A 1, B 2/3, D 1/3, C 0; disagreement ranks (A, B, C) 0, 1, 1/2
    assert by_group["A"].score == pytest.approx(0.5)
    assert by_group["B"].score == pytest.approx((2 / 3 + 1) / 2)
    assert by_group["C"].score == pytest.approx(0.25)
    assert by_group["D"].score == pytest.approx(1 / 3)
    assert [g.group for g in ranked] == ["B", "A", "D", "C"]
    assert [g.rank for g in ranked] == [1, 2, 3, 4]
    # without any teacher value the ranking is the entropy ranking; the certain scan comes last
    plain = rank_groups([dataclasses.replace(s, disagreement=None) for s in scans])
    assert [g.group for g in plain] == ["A", "B", "D", "C"]


# -- constructed scans, end to end ------------------------------------------------------------------


def test_a_scan_the_model_is_certain_about_ranks_last_and_a_corrupt_file_is_listed(tmp_path, monkeypatch):
    monkeypatch.setattr(suggest_module, "predict_probabilities_batch", intensity_probabilities)
    run = image_run(tmp_path / "run")
    scans = tmp_path / "scans"
    grey_png(scans / "certain.png", 0)
    grey_png(scans / "unsure.png", 128)
    grey_png(scans / "middle.png", 40)
    truncate(grey_png(scans / "broken.png", 128, (64, 64)), 0.3)
    (scans / "notes.txt").write_text("not an image")  # ignored, as by uncol predict

    res = suggest(run, [scans], show_progress=False)
    assert [g.group for g in res.groups] == ["unsure", "middle", "certain"]
    assert res.groups[-1].mean_entropy == pytest.approx(0.0, abs=1e-6)
    assert res.groups[0].mean_entropy == pytest.approx(LN2, abs=1e-4)
    assert res.groups[0].foreground_entropy == pytest.approx(LN2, abs=1e-4)  # 128/255 > 0.5: foreground
    assert res.groups[-1].foreground_entropy is None  # nothing predicted as foreground
    assert [f.input.name for f in res.failures] == ["broken.png"] and "PNG" in res.failures[0].reason.upper()
    assert res.teacher is None and all(g.disagreement is None for g in res.groups)

    assert res.csv == run / "suggestions" / "suggestions.csv"
    columns, rows = _csv_rows(res.csv)
    assert columns == list(GROUP_COLUMNS)
    assert [r["group"] for r in rows] == ["unsure", "middle", "certain"] and [r["rank"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["files"] == str(scans / "unsure.png") and rows[0]["cases"] == "1"
    assert rows[-1]["foreground_entropy"] == "" and all(r["teacher_disagreement"] == "" for r in rows)
    assert [float(r["score"]) for r in rows] == [1.0, 0.5, 0.0]
    scan_columns, scan_rows = _csv_rows(run / "suggestions" / "scans.csv")
    assert scan_columns == list(SCAN_COLUMNS) and len(scan_rows) == 3
    back = read_suggestions(run / "suggestions")
    assert back.meta["ranking"] == "entropy" and back.meta["failures"][0]["input"].endswith("broken.png")
    assert [(g.group, g.cases) for g in back.groups] == [(g.group, g.cases) for g in res.groups]

    # the command line: the failure is named on stderr and the exit status is 1
    assert main(["suggest", str(run), "--unlabeled", str(scans), "--out", str(tmp_path / "cli"), "--quiet"]) == 1
    assert (tmp_path / "cli" / "suggestions.csv").is_file()


def test_options_that_would_fail_every_scan_are_refused(tmp_path):
    run = image_run(tmp_path / "run")
    grey_png(tmp_path / "a.png", 10)
    with pytest.raises(ConfigError, match="--top"):
        suggest(run, [tmp_path / "a.png"], write_list=tmp_path / "l.list", show_progress=False)
    with pytest.raises(ConfigError, match="top"):
        suggest(run, [tmp_path / "a.png"], top=0, show_progress=False)
    with pytest.raises(UncolError, match="nothing to rank"):
        suggest(run, [tmp_path / "missing"], show_progress=False)
    with pytest.raises(UncolError, match="splits.json: splits file not found"):  # the run's own split: none
        suggest(run, None, show_progress=False)


# -- the teacher's disagreement ---------------------------------------------------------------------


def _teacher_cfg(num_classes: int = 2) -> Config:
    return config_from_dict({
        "data": {"format": "image2d", "root": "unused", "num_classes": num_classes},
        "teacher": {"name": "litemedsam", "min_pixels": 2},
        "train": {"patch_size": [32, 32]},
    })


def _one_hot(label: np.ndarray, k: int) -> np.ndarray:
    return np.moveaxis(np.eye(k, dtype=np.float32)[label], -1, 0)


def test_teacher_disagreement_is_one_minus_dice_of_its_box_masks():
    cfg = _teacher_cfg()
    judge = TeacherDisagreement(cfg, FakeTeacher(size=64))
    image = CaseData("x", np.random.default_rng(0).random((1, 32, 32)).astype(np.float32), None, (1.0, 1.0))
    box = np.zeros((32, 32), np.int64)
    box[8:20, 10:24] = 1  # a rectangle: the stand-in teacher fills its box, so they agree
    diagonal = np.zeros((32, 32), np.int64)
    diagonal[np.arange(4, 28), np.arange(4, 28)] = 1  # a thin line: its box is far larger than the line
    near = judge(image, _one_hot(box, 2))
    assert near < 0.15  # the box edges, resampled from the teacher canvas
    far = judge(image, _one_hot(diagonal, 2))
    assert far > 0.8
    assert judge(image, _one_hot(np.zeros((32, 32), np.int64), 2)) is None  # nothing to prompt with

    # a volume: slices along the slice axis, Dice over the whole volume
    volume = CaseData("v", np.random.default_rng(1).random((1, 3, 32, 32)).astype(np.float32), None, (1.0, 1.0, 1.0))
    labels = np.stack([box, diagonal, np.zeros_like(box)])
    value = judge(volume, _one_hot(labels, 2))
    assert near < value < far


def test_a_run_with_a_teacher_ranks_by_entropy_and_disagreement(tmp_path, monkeypatch, fake_litemedsam):
    monkeypatch.setattr(suggest_module, "predict_probabilities_batch", intensity_probabilities)
    run = image_run(tmp_path / "run", teacher={"name": "litemedsam", "min_pixels": 2,
                                               "cache_dir": str(tmp_path / "cache")})
    scans = tmp_path / "scans"
    rect = np.zeros((32, 32), np.uint8)
    rect[8:20, 8:22] = 150  # foreground p = 0.59: uncertain, and a box the teacher fills exactly
    line = np.zeros((32, 32), np.uint8)
    line[np.arange(32), np.arange(32)] = 250  # confident thin diagonal: low entropy, a box far too large
    for name, arr in (("rect", rect), ("line", line)):
        scans.mkdir(exist_ok=True)
        Image.fromarray(arr).save(scans / f"{name}.png")
    grey_png(scans / "empty.png", 0, (32, 32))  # no foreground: no prompt, no disagreement

    res = suggest(run, [scans], top=2, show_progress=False)
    by_group = {g.group: g for g in res.groups}
    assert res.teacher is not None and res.teacher.startswith("fake|")
    assert by_group["rect"].disagreement < 0.15
    assert by_group["line"].disagreement > 0.8
    assert by_group["empty"].disagreement is None
    assert by_group["rect"].mean_entropy > by_group["line"].mean_entropy > by_group["empty"].mean_entropy
    # rect: entropy rank 1, disagreement rank 0 -> 0.5; line: 0.5 and 1 -> 0.75; empty: entropy alone -> 0
    assert [g.group for g in res.groups] == ["line", "rect", "empty"]
    assert by_group["line"].score == pytest.approx(0.75) and by_group["rect"].score == pytest.approx(0.5)
    assert len(fake_litemedsam) == 1 and fake_litemedsam[0].decode_calls == 2  # the empty scan is not prompted
    assert any((tmp_path / "cache").iterdir())  # encoder outputs went through the run's feature cache
    _, rows = _csv_rows(res.csv)
    assert rows[0]["teacher_disagreement"] != "" and rows[-1]["teacher_disagreement"] == ""

    plain = suggest(run, [scans], out=tmp_path / "plain", use_teacher=False, show_progress=False)
    assert plain.teacher is None and [g.group for g in plain.groups] == ["rect", "line", "empty"]


# -- patients, the labeled list and the report --------------------------------------------------------


@pytest.fixture(scope="module")
def acdc_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A supervised run on 2 of 6 training patients (2 slices each), evaluated on its test volume."""
    root = tmp_path_factory.mktemp("suggest")
    data = make_hdf5_dataset(root / "data", n_train=6, n_val=1, n_test=1, slices=2, shape=(32, 32), num_classes=3)
    values = {
        "name": "sup", "output_dir": str(root / "runs"), "data": dataclasses.asdict(data),
        "split": {"labeled": 2}, "model": {"arch": "unet2d", "channels": [4, 8]},
        "train": {"iterations": 3, "batch_size": 2, "patch_size": [32, 32], "val_every": 3, "log_every": 1,
                  "threads": 1, "device": "cpu"},
    }
    torch.set_num_threads(1)
    res = api.train(config_from_dict(values), evaluate_splits=("test",), show_progress=False)
    return Path(res["run_dir"]), data


def test_patients_rank_as_one_unit_and_the_list_makes_them_labeled(acdc_like, tmp_path, capsys):
    run, data = acdc_like
    splits = load_splits(RunPaths(run).splits)
    labeled = {c.group for c in splits.labeled}
    listed = tmp_path / "next.list"
    out = tmp_path / "ranked"
    assert main(["suggest", str(run), "--top", "2", "--out", str(out), "--write-list", str(listed), "--quiet"]) == 0
    assert "ranked by entropy" in capsys.readouterr().out
    ranked = read_suggestions(out)
    assert len(ranked.groups) == 4 and {g.group for g in ranked.groups} == {c.group for c in splits.unlabeled}
    for g in ranked.groups:  # a patient's two slices rank as one unit, by their mean
        members = [s for s in ranked.scans if s.group == g.group]
        assert len(members) == 2 and all(s.source == "split" for s in members)
        assert g.mean_entropy == pytest.approx(np.mean([s.mean_entropy for s in members]), rel=1e-4)
    top = [g.group for g in ranked.groups[:2]]

    # round trip: the list names the labeled patients, then the top 2; the split labels exactly these
    names = [line for line in listed.read_text().splitlines() if line and not line.startswith("#")]
    assert set(names[:2]) == labeled and names[2:] == top
    cfg = config_from_dict({"data": dataclasses.asdict(data), "split": {"labeled_list": str(listed)}})
    new = make_splits(discover(cfg.data), cfg.split)
    assert {c.group for c in new.labeled} == labeled | set(top)
    assert {c.group for c in new.unlabeled} == {g.group for g in ranked.groups[2:]}
    assert all(c.label_path is not None for c in new.labeled)

    only_new = tmp_path / "new.list"
    suggest(run, top=1, out=out, write_list=only_new, new_only=True, show_progress=False)
    assert [ln for ln in only_new.read_text().splitlines() if not ln.startswith("#")] == top[:1]


def _section_images(text: str) -> list[Image.Image]:
    section = text.split('<section id="suggestions">')[1].split("</section>")[0]
    images = []
    for src in re.findall(r'<img[^>]*\ssrc="data:image/png;base64,([^"]*)"', section):
        img = Image.open(io.BytesIO(base64.b64decode(src, validate=True)))
        img.load()
        images.append(img)
    return images


def test_the_report_shows_the_top_ranked_scans(acdc_like, tmp_path):
    run, _ = acdc_like
    assert find_suggestions(run) is None  # no RUN/suggestions yet: the report has no such section

    res = suggest(run, top=3, show_progress=False)
    text = build_report([run], out=tmp_path / "report.html").read_text()
    assert '<section id="suggestions">' in text and 'href="#suggestions"' in text
    section = text.split('<section id="suggestions">')[1].split("</section>")[0]
    for g in res.top_groups:
        assert f'<th scope="row">{g.group}</th>' in section
    assert res.groups[3].group not in section  # beyond --top
    images = _section_images(text)
    assert len(images) == 3 and all(img.format == "PNG" and min(img.size) >= 100 for img in images)
    assert "https:" not in section and "<script" not in section

    # an output folder elsewhere is named with --suggestions; a folder without a ranking is an error
    elsewhere = suggest(run, top=1, out=tmp_path / "elsewhere", show_progress=False)
    out = tmp_path / "cli.html"
    assert main(["report", str(run), "--suggestions", str(elsewhere.csv.parent), "--out", str(out)]) == 0
    assert len(_section_images(out.read_text())) == 1
    with pytest.raises(UncolError, match="suggestions.csv"):
        build_report([run], out=tmp_path / "x.html", suggestions=tmp_path / "nothing")
