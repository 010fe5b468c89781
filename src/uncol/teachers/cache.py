"""On-disk cache of the frozen teacher's encoder outputs, and flips/rotations applied to them.

The teacher's image encoder costs seconds per image on a CPU while its weights never change, so its
outputs are computed once per image and stored:

* a *features* entry: the layers of the layer map, average-pooled to the token grid, float16
  (a few hundred kB per image);
* optionally an *embedding* entry: the full-resolution image embedding (float16, 2 MB for LiteMedSAM),
  from which the cheap prompt encoder and mask decoder give prompt-conditioned features and masks for
  any prompt without running the encoder again (zero-shot evaluation, pseudo-label prompts).

An entry's key hashes the image content (dtype, shape, bytes), the teacher identity (name, weights
digest, preprocessing recipe) and, for features, the layers and grid: a changed image, teacher or
preprocessing is simply a different key, so a stale entry is never read. Entries are written
atomically and carry their key and a BLAKE2 digest of their payload; a truncated, partial or corrupt
file is detected on reading, deleted and recomputed, never used.

Several processes may fill one cache folder at once (``uncol teacher cache`` shards): there is no
shared index to update (the folder listing is the index), every writer renames its own complete
temporary file over the entry, so two writers of one entry leave one of two identical sound files,
and readers see either no file or a whole one.

Training never recomputes features of un-augmented views: it asks for the features of the stored
sample and mirrors the sample's flips and 90-degree rotations on them with :func:`apply_geometry`
(exact for pooled grids; see docs/teachers.md); a free rotation is then applied to the mapped targets
by :mod:`uncol.data.rotation` (an approximation of re-encoding, measured in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from uncol.atomic import atomic_write
from uncol.teachers.base import Encoded, FeatureSource, FoundationTeacher
from uncol.teachers.preprocessing import geometry_for

CACHE_FORMAT = 1
MAGIC = b"UNCOLTC\x01"
_HEADER = struct.Struct("<8sI")
_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def image_digest(image: np.ndarray) -> str:
    """Content digest of an image (dtype-normalised to float32, shape included)."""
    arr = np.ascontiguousarray(image, dtype=np.float32)
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


@dataclass
class CacheStats:
    """Counters of one cache object: entries found, computed, and found damaged (then recomputed)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0


class FeatureCache(FeatureSource):
    """Teacher encoder outputs on disk, keyed by image content + teacher + preprocessing.

    Args:
        teacher: the teacher computing missing entries.
        root: cache folder (entries go to ``root/<teacher name>/<2 hex>/<key>.<kind>``).
        memory_mb: also keep up to this many MB of features in memory (0: disk only).
    """

    def __init__(self, teacher: FoundationTeacher, root: str | Path, memory_mb: float = 0.0) -> None:
        self.teacher = teacher
        self.root = Path(root)
        self.stats = CacheStats()
        self._memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._memory_budget = int(memory_mb * 2**20)
        self._memory_bytes = 0
        self._feature_salt = (
            f"uncol-teacher-cache-v{CACHE_FORMAT}|{teacher.identity}|layers={','.join(teacher.visual_layers)}"
            f"|grid={teacher.token_grid}"
        )
        self._embedding_salt = f"uncol-teacher-cache-v{CACHE_FORMAT}|{teacher.identity}|embedding"

    # ---- keys and paths -------------------------------------------------------------------------

    def _key(self, salt: str, digest: str) -> str:
        return hashlib.blake2b(f"{salt}|{digest}".encode(), digest_size=20).hexdigest()

    def feature_key(self, image: np.ndarray) -> str:
        """Key of the features entry of ``image``."""
        return self._key(self._feature_salt, image_digest(image))

    def embedding_key(self, image: np.ndarray) -> str:
        """Key of the embedding entry of ``image``."""
        return self._key(self._embedding_salt, image_digest(image))

    def path(self, key: str, kind: str) -> Path:
        """File of an entry (``kind``: ``feat`` or ``emb``)."""
        return self.root / self.teacher.name / key[:2] / f"{key}.{kind}"

    # ---- entry files ----------------------------------------------------------------------------

    def _write(self, key: str, kind: str, tensors: Mapping[str, torch.Tensor]) -> None:
        blobs, specs = [], []
        for name, t in tensors.items():
            arr = t.detach().cpu().contiguous().numpy()
            blobs.append(arr.tobytes())
            specs.append([name, str(arr.dtype), list(arr.shape), arr.nbytes])
        payload = b"".join(blobs)
        header = json.dumps(
            {
                "key": key,
                "kind": kind,
                "identity": self.teacher.identity,
                "tensors": specs,
                "payload_bytes": len(payload),
                "payload_blake2b": hashlib.blake2b(payload, digest_size=20).hexdigest(),
            }
        ).encode()

        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                fh.write(_HEADER.pack(MAGIC, len(header)))
                fh.write(header)
                fh.write(payload)

        atomic_write(self.path(key, kind), write)

    def _read(self, key: str, kind: str) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, ``None`` when absent; a damaged entry is deleted and reported absent."""
        path = self.path(key, kind)
        try:
            fh = open(path, "rb")  # held open until a damaged file is discarded (_discard_if_unchanged)
        except FileNotFoundError:
            return None
        with fh:
            data = fh.read()
            problem = _check_entry(data, key)
            if isinstance(problem, str):
                self.stats.corrupt += 1
                warnings.warn(f"{path}: damaged teacher cache entry ({problem}); recomputing", stacklevel=3)
                _discard_if_unchanged(path, fh.fileno())
                return None
        header, offset = problem
        out: dict[str, torch.Tensor] = {}
        for name, dtype, shape, nbytes in header["tensors"]:
            arr = np.frombuffer(data, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=offset).reshape(shape)
            out[name] = torch.from_numpy(arr.copy())
            offset += nbytes
        return out

    # ---- memory layer ---------------------------------------------------------------------------

    def _remember(self, key: str, feats: dict[str, torch.Tensor]) -> None:
        if self._memory_budget <= 0 or key in self._memory:
            return
        self._memory[key] = feats
        self._memory_bytes += sum(t.numel() * t.element_size() for t in feats.values())
        while self._memory_bytes > self._memory_budget and self._memory:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= sum(t.numel() * t.element_size() for t in old.values())

    # ---- public API -----------------------------------------------------------------------------

    def encode(self, images: Sequence[np.ndarray], embeddings: bool = False) -> list[Encoded]:
        """Encoder outputs of 2D images ``(C, H, W)`` or ``(H, W)``: from the cache, else computed and stored.

        Args:
            images: the images (exactly the arrays whose content keys the entries).
            embeddings: also return (and cache) the full image embedding the mask decoder needs.
        """
        digests = [image_digest(im) for im in images]
        found: list[Encoded | None] = []
        for im, d in zip(images, digests, strict=True):
            fkey = self._key(self._feature_salt, d)
            feats = self._memory.get(fkey)
            if feats is not None:
                self._memory.move_to_end(fkey)
            else:
                feats = self._read(fkey, "feat")
            emb = None
            if embeddings and feats is not None:
                entry = self._read(self._key(self._embedding_salt, d), "emb")
                emb = None if entry is None else entry["embedding"]
            if feats is None or (embeddings and emb is None):
                found.append(None)
                continue
            self._remember(fkey, feats)
            found.append(Encoded(feats, emb, geometry_for(np.shape(im)[-2:], self.teacher.spec)))
        missing = [i for i, e in enumerate(found) if e is None]
        self.stats.hits += len(images) - len(missing)
        self.stats.misses += len(missing)
        if missing:
            computed = self.teacher.encode([images[i] for i in missing], keep_embedding=embeddings)
            for i, enc in zip(missing, computed, strict=True):
                fkey = self._key(self._feature_salt, digests[i])
                self._write(fkey, "feat", enc.features)
                self._remember(fkey, enc.features)
                if embeddings and enc.embedding is not None:
                    self._write(self._key(self._embedding_salt, digests[i]), "emb", {"embedding": enc.embedding})
                found[i] = enc
        return [e for e in found if e is not None]

    def get(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Visual-layer features of one image: layer name -> float16 ``(C, g, g)``."""
        return self.encode([image])[0].features

    def get_batch(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Features of a batch: layer name -> float16 ``(B, C, g, g)``."""
        encoded = self.encode(images)
        return {n: torch.stack([e.features[n] for e in encoded]) for n in self.teacher.visual_layers}

    def contains(self, image: np.ndarray, embeddings: bool = False) -> bool:
        """Whether a valid-looking entry exists (files present; their content is checked when read)."""
        d = image_digest(image)
        ok = self.path(self._key(self._feature_salt, d), "feat").is_file()
        return ok and (not embeddings or self.path(self._key(self._embedding_salt, d), "emb").is_file())

    def warm(
        self,
        images: Iterable[np.ndarray],
        embeddings: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> CacheStats:
        """Make sure every image is cached, computing in teacher-sized batches; returns this call's counts."""
        before = CacheStats(self.stats.hits, self.stats.misses, self.stats.corrupt)
        batch: list[np.ndarray] = []
        for im in images:
            batch.append(im)
            if len(batch) == self.teacher.batch_size:
                self.encode(batch, embeddings)
                if progress is not None:
                    progress(len(batch))
                batch = []
        if batch:
            self.encode(batch, embeddings)
            if progress is not None:
                progress(len(batch))
        return CacheStats(
            self.stats.hits - before.hits, self.stats.misses - before.misses, self.stats.corrupt - before.corrupt
        )

    @property
    def entries_dir(self) -> Path:
        """The folder of this teacher's entries (``root/<teacher name>``)."""
        return self.root / self.teacher.name

    def stray_temporaries(self, older_than_s: float = 3600.0) -> list[Path]:
        """See :func:`stray_temporaries`."""
        return stray_temporaries(self.entries_dir, older_than_s)

    def disk_usage(self) -> dict[str, tuple[int, int]]:
        """See :func:`entry_usage`."""
        return entry_usage(self.entries_dir)


def entry_usage(entries_dir: Path) -> dict[str, tuple[int, int]]:
    """Per entry kind (``feat``/``emb``): ``(number of files, total bytes)`` in a teacher's entry folder.

    Temporary files of writers at work (``.<entry>.<random>.tmp``) are not entries and not counted.
    """
    out: dict[str, tuple[int, int]] = {}
    for kind in ("feat", "emb"):
        sizes = []
        for f in Path(entries_dir).glob(f"*/*.{kind}"):
            try:
                sizes.append(f.stat().st_size)
            except FileNotFoundError:  # a damaged entry another process just discarded
                continue
        out[kind] = (len(sizes), sum(sizes))
    return out


def stray_temporaries(entries_dir: Path, older_than_s: float = 3600.0) -> list[Path]:
    """Temporary files of writers that stopped before renaming them (older than ``older_than_s``).

    They are never read (entries are looked up by their final name only) and can be deleted; younger
    ones may belong to a writer still at work, so they are left out.
    """
    cutoff = time.time() - older_than_s
    found = []
    for f in Path(entries_dir).glob("*/.*.tmp"):
        try:
            if f.stat().st_mtime < cutoff:
                found.append(f)
        except FileNotFoundError:  # renamed by its writer meanwhile
            continue
    return sorted(found)


def _discard_if_unchanged(path: Path, fd: int) -> None:
    """Delete ``path`` if it is still the file open as ``fd``.

    Another process may have replaced the damaged file with a sound entry since it was opened
    (``os.replace`` puts a new inode at the path); that entry must stay. The open descriptor keeps
    the damaged file's inode from being reused, so equal inodes mean the very file that was read.
    """
    try:
        current, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return
    if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
        path.unlink(missing_ok=True)


def _check_entry(data: bytes, key: str) -> str | tuple[dict, int]:
    """``(header, payload offset)`` of a sound entry, else the problem found."""
    if len(data) < _HEADER.size:
        return "truncated header"
    magic, header_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        return "not a cache entry (bad magic)"
    start = _HEADER.size + header_len
    if start > len(data):
        return "truncated header"
    try:
        header = json.loads(data[_HEADER.size : start])
        tensors = header["tensors"]
        declared = int(header["payload_bytes"])
        digest = header["payload_blake2b"]
    except (ValueError, KeyError, TypeError):
        return "unreadable header"
    if header.get("key") != key:
        return "entry of another key"
    payload = memoryview(data)[start:]
    if len(payload) != declared or sum(int(t[3]) for t in tensors) != declared:
        return f"payload has {len(payload)} bytes, expected {declared} (partial write)"
    if hashlib.blake2b(payload, digest_size=20).hexdigest() != digest:
        return "payload digest mismatch"
    for _, dtype, shape, nbytes in tensors:
        if dtype not in _DTYPES or int(np.prod(shape)) * np.dtype(dtype).itemsize != int(nbytes):
            return "inconsistent tensor table"
    return header, start


T = TypeVar("T", torch.Tensor, np.ndarray)


def transform_view(x: T, flips: Sequence[bool], rot90: int, inverse: bool = False) -> T:
    """Mirror (or undo) an augmentation's flips and quarter turns on maps ``(..., *spatial)``.

    ``flips[i]`` flips the ``i``-th of the last ``len(flips)`` axes, then ``rot90`` quarter turns are
    made in the plane of the last two axes (``np.rot90`` semantics): the order of
    :func:`uncol.data.transforms.apply_augment`, for 2D and 3D maps. Tensors or arrays.
    """
    k = (-rot90 if inverse else rot90) % 4
    is_torch = isinstance(x, torch.Tensor)
    axes = [x.ndim - len(flips) + i for i, f in enumerate(flips) if f]

    def flip_all(y: T) -> T:
        if not axes:
            return y
        return torch.flip(y, dims=axes) if is_torch else np.flip(y, axis=axes)  # type: ignore[return-value]

    def rotate(y: T) -> T:
        if not k:
            return y
        return torch.rot90(y, k, dims=(-2, -1)) if is_torch else np.rot90(y, k, axes=(-2, -1))  # type: ignore[return-value]

    # Forward: flips, then rotation; the inverse undoes them in reverse order.
    y = flip_all(rotate(x)) if inverse else rotate(flip_all(x))
    return y.contiguous() if is_torch else np.ascontiguousarray(y)  # type: ignore[return-value]


def _geometry_one(x: T, flips: Sequence[bool], rot90: int, inverse: bool) -> T:
    if len(flips) != 2:
        raise ValueError(f"feature geometry is 2D: expected 2 flips (H, W), got {len(flips)}")
    return transform_view(x, flips, rot90, inverse)


def apply_geometry(features: T | Mapping[str, T], flips: Sequence[bool], rot90: int) -> T | dict[str, T]:
    """Mirror an augmentation's flips and 90-degree rotations on feature maps ``(..., H, W)``.

    Matches :func:`uncol.data.transforms.apply_augment` on a 2D image: ``flips[i]`` flips spatial axis
    ``i`` (0: rows H, 1: columns W), then ``rot90`` quarter turns in the (H, W) plane with
    ``np.rot90`` semantics. Accepts a tensor, an array, or a dict of them (as :meth:`FeatureCache.get`
    returns).
    """
    if isinstance(features, Mapping):
        return {k: _geometry_one(v, flips, rot90, inverse=False) for k, v in features.items()}
    return _geometry_one(features, flips, rot90, inverse=False)


def invert_geometry(features: T | Mapping[str, T], flips: Sequence[bool], rot90: int) -> T | dict[str, T]:
    """Undo :func:`apply_geometry` (e.g. to bring an augmented mask back to the cached view)."""
    if isinstance(features, Mapping):
        return {k: _geometry_one(v, flips, rot90, inverse=True) for k, v in features.items()}
    return _geometry_one(features, flips, rot90, inverse=True)
