"""`uncol teacher cache` over several processes: shard assignment, concurrent writers, torn writes, torchrun."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing
import yaml

from fake_teacher import FakeTeacher
from fixtures_data import make_image2d_dataset
from teacher_cache_writer import write_all, writer_images
from uncol.atomic import atomic_write
from uncol.cli import main
from uncol.config import load_config
from uncol.data.training import SampleSet
from uncol.errors import UncolError
from uncol.teachers import FeatureCache, open_cache
from uncol.teachers import cache as cache_module
from uncol.teachers.cache import _check_entry
from uncol.teachers.sharding import Shard, select_shard, shard_of_keys
from uncol.teachers.zero_shot import split_cases

DRIVER = Path(__file__).resolve().parents[1] / "uncol_with_fake_teacher.py"


def _entries(root: Path) -> dict[str, bytes]:
    """Every entry file under a cache folder, by relative path (temporary files excluded)."""
    return {
        str(f.relative_to(root)): f.read_bytes()
        for kind in ("feat", "emb")
        for f in sorted(root.glob(f"*/*/*.{kind}"))
    }


def _config(tmp_path: Path, cache_dir: Path, n_cases: int = 6, n_unlabeled: int = 6) -> Path:
    data = make_image2d_dataset(tmp_path / "img", n_cases=n_cases, n_unlabeled=n_unlabeled)
    values = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "data": dataclasses.asdict(data),
        "split": {"labeled": 2, "val_fraction": 0.0, "test_fraction": 0.2},
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "train": {"patch_size": [32, 32], "threads": 1, "device": "cpu"},
        "teacher": {"name": "litemedsam", "device": "cpu", "batch_size": 2, "cache_dir": str(cache_dir)},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _reference(cfg_path: Path, tmp_path: Path) -> dict[str, bytes]:
    """The entries one process writes alone into a fresh folder."""
    ref = tmp_path / "reference"
    assert main(["teacher", "cache", str(cfg_path), "--quiet", "--set", f"teacher.cache_dir={ref}"]) == 0
    return _entries(ref)


# ---- shard assignment ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shards_cover_every_image_exactly_once(n):
    rng = random.Random(n)
    distinct = [f"{rng.getrandbits(160):040x}" for _ in range(23)]
    keys = distinct + distinct[:5]  # an image listed twice has one key: encoded once
    chosen = [select_shard(keys, Shard(i, n)) for i in range(n)]
    covered = [keys[j] for c in chosen for j in c]
    assert sorted(covered) == sorted(distinct)  # every key exactly once over all shards
    sizes = [len(c) for c in chosen]
    assert max(sizes) - min(sizes) <= 1  # balanced to within one image
    # the assignment depends on the keys only, not on the order the images were listed in
    shuffled = keys[:]
    rng.shuffle(shuffled)
    assert shard_of_keys(shuffled, n) == shard_of_keys(keys, n)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("2/2", "must lie in 0..1"), ("1/0", "at least 1"), ("a/2", "expected INDEX/COUNT"), ("-1/2", "expected INDEX/COUNT")],
)
def test_malformed_shards_are_refused_by_name(text, problem):
    with pytest.raises(UncolError, match=problem):
        Shard.parse(text)
    assert Shard.parse(" 1 / 3 ") == Shard(1, 3) and str(Shard(1, 3)) == "1/3"


# ---- job array: independent --shard processes -------------------------------------------------


def test_job_array_shards_fill_the_cache_once_and_resume(tmp_path, use_fake, capsys):
    cache_dir = tmp_path / "cache"
    cfg_path = _config(tmp_path, cache_dir)
    reference = _reference(cfg_path, tmp_path)
    n = len(reference)
    capsys.readouterr()
    reports = []
    for i in range(2):
        report = tmp_path / f"shard{i}.json"
        assert main(["teacher", "cache", str(cfg_path), "--quiet", "--shard", f"{i}/2", "--report", str(report)]) == 0
        reports.append(json.loads(report.read_text()))
    out = capsys.readouterr().out
    assert "shard 0/2:" in out and "shard 1/2:" in out and "images/s" in out
    encoded = [r["shards"][0]["encoded"] for r in reports]
    assert sum(encoded) == n and abs(encoded[0] - encoded[1]) <= 1  # each image once, split evenly
    assert all(r["shards"][0]["skipped"] == 0 and r["launcher"] == "process" for r in reports)
    assert sum(t.encoded_images for t in use_fake[1:]) == n
    assert _entries(cache_dir) == reference
    # resumable: a shard run again finds its entries and encodes nothing
    assert main(["teacher", "cache", str(cfg_path), "--quiet", "--shard", "1/2"]) == 0
    assert f"0 encoded, {encoded[1]} skipped" in capsys.readouterr().out and use_fake[-1].encoded_images == 0


# ---- several writers, one folder --------------------------------------------------------------


def test_two_concurrent_writers_leave_sound_entries(tmp_path):
    n = 64
    root = tmp_path / "shared"
    # fork: the writers start at once instead of importing torch again (seconds each on a loaded machine)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    writers = [ctx.Process(target=write_all, args=(str(root), n, barrier, results)) for _ in range(2)]
    for w in writers:
        w.start()
    # a reader at work meanwhile: every entry file it finds at its final name is whole
    reads = 0
    while any(w.is_alive() for w in writers):
        for f in list(root.glob("*/*/*.feat")) + list(root.glob("*/*/*.emb")):
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                continue
            assert not isinstance(_check_entry(data, f.name.split(".")[0]), str), f"{f}: read a partial entry"
            reads += 1
        time.sleep(0.005)
    for w in writers:
        w.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    encoded = [results.get(timeout=5) for _ in writers]
    assert encoded == [n, n]  # both writers encoded and wrote every entry: all writes overlapped
    assert reads > 0
    assert not list(root.glob("*/*/.*.tmp"))  # no temporary file left behind
    reference_root = tmp_path / "single"
    FeatureCache(FakeTeacher(batch_size=n), reference_root).warm(writer_images(n), embeddings=True)
    assert _entries(root) == _entries(reference_root) and len(_entries(root)) == 2 * n
    fresh = FakeTeacher()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a damaged entry would warn
        FeatureCache(fresh, root).warm(writer_images(n), embeddings=True)
    assert fresh.encoded_images == 0


# ---- torn writes ------------------------------------------------------------------------------


def test_stray_temporary_file_is_never_read(tmp_path, fake_teacher):
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path)
    done, torn = writer_images(2)
    cache.get(done)
    good = cache.path(cache.feature_key(done), "feat").read_bytes()
    target = cache.path(cache.feature_key(torn), "feat")
    target.parent.mkdir(parents=True, exist_ok=True)
    stray = target.with_name(f".{target.name}.k3x9.tmp")  # a writer killed before its rename
    stray.write_bytes(good[: len(good) // 2])
    assert not cache.contains(torn) and cache.disk_usage()["feat"][0] == 1
    assert cache.stray_temporaries() == []  # young: may belong to a writer at work
    old = time.time() - 2 * 3600
    os.utime(stray, (old, old))
    assert cache.stray_temporaries() == [stray]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feats = FeatureCache(t, tmp_path).get(torn)
    assert t.encoded_images == 2 and target.is_file() and stray.is_file()  # encoded, the stray untouched
    assert feats["stage1"].shape == (3, 8, 8)


def test_truncated_entry_is_refused_by_name_and_encoded_again(tmp_path, use_fake, capsys):
    cache_dir = tmp_path / "cache"
    cfg_path = _config(tmp_path, cache_dir)
    reference = _reference(cfg_path, tmp_path)
    assert main(["teacher", "cache", str(cfg_path), "--quiet", "--shard", "0/2"]) == 0
    written = sorted(cache_dir.glob("*/*/*.feat"))
    written[0].write_bytes(written[0].read_bytes()[:-10])  # cut short by some other tool: not how uncol writes
    capsys.readouterr()
    with pytest.warns(UserWarning, match=rf"{written[0].name}: damaged teacher cache entry \(payload has"):
        assert main(["teacher", "cache", str(cfg_path), "--quiet", "--shard", "0/2"]) == 0
    out = capsys.readouterr().out
    assert "1 encoded" in out and "1 damaged and re-encoded" in out
    assert use_fake[-1].encoded_images == 1
    assert main(["teacher", "cache", str(cfg_path), "--quiet", "--shard", "1/2"]) == 0
    assert _entries(cache_dir) == reference


def test_damaged_entry_replaced_meanwhile_is_kept(tmp_path, fake_teacher, monkeypatch):
    t = fake_teacher()
    cache = FeatureCache(t, tmp_path)
    img = writer_images(1)[0]
    key = cache.feature_key(img)
    cache.get(img)
    path = cache.path(key, "feat")
    sound = path.read_bytes()
    path.write_bytes(sound[:-10])
    real_check = cache_module._check_entry

    def other_writer_renames_meanwhile(data: bytes, k: str) -> object:
        verdict = real_check(data, k)
        atomic_write(path, lambda p: p.write_bytes(sound))  # another process's sound entry lands now
        return verdict

    monkeypatch.setattr(cache_module, "_check_entry", other_writer_renames_meanwhile)
    with pytest.warns(UserWarning, match="damaged teacher cache entry"):
        assert FeatureCache(t, tmp_path)._read(key, "feat") is None
    assert path.read_bytes() == sound  # the reader deleted only the damaged file it had read
    monkeypatch.undo()
    path.write_bytes(sound[:-10])
    with pytest.warns(UserWarning, match="damaged teacher cache entry"):
        assert FeatureCache(t, tmp_path)._read(key, "feat") is None
    assert not path.exists()  # nobody replaced it: the damaged file is gone


# ---- torchrun ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_process(rank: int, port: int, argv: list[str], stdout: str) -> None:
    """One rank, as torchrun starts it: its variables in the environment, then the command line."""
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP thread pool
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    with open(stdout, "w") as fh, contextlib.redirect_stdout(fh):
        code = main(argv)
    sys.exit(code)


def _check_two_rank_run(cfg_path: Path, cache_dir: Path, report: Path, outs: list[str], reference: dict) -> None:
    assert "total over 2 process(es)" in outs[0] and "shard 1/2:" in outs[0]
    assert "shard" not in outs[1]  # rank 0 speaks for all ranks
    r = json.loads(report.read_text())
    assert r["launcher"] == "torchrun" and [s["shard"] for s in r["shards"]] == ["0/2", "1/2"]
    assert r["total"]["encoded"] == len(reference) == sum(s["encoded"] for s in r["shards"])
    assert all(s["skipped"] == 0 for s in r["shards"])  # disjoint shards: nobody found another's entry
    assert r["disk"]["feat"]["files"] == len(reference)  # counted after every rank had finished
    assert _entries(cache_dir) == reference


def test_torchrun_style_ranks_cover_the_cache(tmp_path, use_fake):
    cache_dir = tmp_path / "cache"
    cfg_path = _config(tmp_path, cache_dir)
    reference = _reference(cfg_path, tmp_path)
    report = tmp_path / "report.json"
    argv = ["teacher", "cache", str(cfg_path), "--quiet", "--report", str(report)]
    port = _free_port()
    # fork: the ranks inherit the stand-in teacher and skip a fresh torch import each; the real
    # torchrun launcher is exercised by test_torchrun_launcher (marked slow)
    ctx = torch.multiprocessing.get_context("fork")
    ranks = [ctx.Process(target=_rank_process, args=(r, port, argv, str(tmp_path / f"out{r}"))) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=120)
    assert [p.exitcode for p in ranks] == [0, 0]
    outs = [(tmp_path / f"out{r}").read_text() for r in range(2)]
    _check_two_rank_run(cfg_path, cache_dir, report, outs, reference)


@pytest.mark.slow
def test_torchrun_launcher(tmp_path, use_fake):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip(f"{torchrun}: not installed")
    cache_dir = tmp_path / "cache"
    cfg_path = _config(tmp_path, cache_dir)
    reference = _reference(cfg_path, tmp_path)
    report = tmp_path / "report.json"
    logs = tmp_path / "logs"
    cmd = [
        str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        "--log-dir", str(logs), "--redirects", "1", "--tee", "0",
        str(DRIVER), "teacher", "cache", str(cfg_path), "--quiet", "--report", str(report),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    outs = [next(logs.rglob(f"attempt_0/{r}/stdout.log")).read_text() for r in range(2)]
    _check_two_rank_run(cfg_path, cache_dir, report, outs, reference)


def test_shard_under_torchrun_is_refused(tmp_path, use_fake, monkeypatch, capsys):
    cfg_path = _config(tmp_path, tmp_path / "cache", n_cases=3, n_unlabeled=0)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["teacher", "cache", str(cfg_path), "--quiet", "--shard", "0/2"]) == 2
    assert "--shard 0/2 cannot be combined with torchrun" in capsys.readouterr().err
    assert not use_fake and not (tmp_path / "cache").exists()


def test_limit_keeps_the_first_images(tmp_path, use_fake):
    cfg_path = _config(tmp_path, tmp_path / "cache")
    assert main(["teacher", "cache", str(cfg_path), "--quiet", "--limit", "3"]) == 0
    assert use_fake[0].encoded_images == 3
    cfg = load_config(cfg_path)
    cache = open_cache(cfg, use_fake[0])
    samples = SampleSet(split_cases(cfg, "train"), cfg, use_labels=False).samples
    assert [cache.contains(s.image) for s in samples[:4]] == [True, True, True, False]
    assert cache.disk_usage()["feat"][0] == 3
