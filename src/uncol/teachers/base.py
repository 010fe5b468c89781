"""The foundation-teacher interface that training methods and zero-shot evaluation use.

A :class:`FoundationTeacher` wraps a frozen SAM-family model (an image encoder, a prompt encoder and
a mask decoder with SAM's two-way transformer) and answers, for 2D images and prompts:

* the image encoder's intermediate features at configurable layers, average-pooled to a token grid
  (visual distillation targets; :meth:`FoundationTeacher.encode`);
* the prompt-conditioned fused image features: the image tokens coming out of the mask decoder's
  two-way transformer, one map per prompted class (semantic distillation targets);
* per-class foreground logits/probabilities at the input's original size (:meth:`FoundationTeacher.predict`).

3D volumes are handled slice by slice along an axis (:meth:`FoundationTeacher.predict_volume`).
Multi-class tasks prompt one box per class present; each class is decoded independently and where
masks overlap the higher logit wins: the class distribution is ``softmax([0, l_1, ..., l_{K-1}])``,
i.e. a pixel is background unless some class logit is positive (sigmoid > 0.5), and otherwise the
class with the highest logit. For a single class this is exactly SAM's sigmoid.

Subclasses only build the networks and name their layers; hooks, batching, prompt handling and the
mapping back to the original geometry live here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from uncol.devices import select_device
from uncol.errors import ConfigError
from uncol.teachers.preprocessing import (
    PreprocessSpec,
    SliceGeometry,
    canvas_to_original,
    pool_to_grid,
    preprocess,
)
from uncol.teachers.prompts import Prompts, boxes_from_mask, jitter_in_pixels

#: Name of the prompt-conditioned features in a layer map.
FUSED = "fused"
#: Logit of a class that was not prompted: its probability is exactly 0 in float32.
ABSENT_LOGIT = -1.0e4


@dataclass
class Encoded:
    """Encoder outputs of one 2D image.

    Attributes:
        features: visual layer name -> ``(C, g, g)`` float16 features pooled over the image region.
        embedding: the encoder output ``(C, h, w)`` (float16) that the mask decoder needs, or ``None``
            when it was not requested.
        geometry: where the image lies on the teacher's canvas.
    """

    features: dict[str, torch.Tensor]
    embedding: torch.Tensor | None
    geometry: SliceGeometry


@dataclass
class TeacherOutput:
    """What the teacher says about one 2D image and its prompts.

    Attributes:
        features: visual layer name -> ``(C, g, g)`` features (visual distillation targets).
        fused: ``(K-1, C, g, g)`` prompt-conditioned features per foreground class; zeros for
            classes without a prompt (semantic distillation targets).
        present: ``(K-1,)`` bool, which classes were prompted.
        logits: ``(K-1, H, W)`` float32 foreground logits at the image's original size;
            :data:`ABSENT_LOGIT` for classes without a prompt.
    """

    features: dict[str, torch.Tensor]
    fused: torch.Tensor
    present: np.ndarray
    logits: torch.Tensor

    @property
    def foreground_probabilities(self) -> np.ndarray:
        """``(K-1, H, W)`` sigmoid of each class's logit (0 for classes without a prompt)."""
        return foreground_probabilities(self.logits.numpy())

    @property
    def probabilities(self) -> np.ndarray:
        """``(K, H, W)`` class distribution (overlaps resolved by the higher logit)."""
        return class_probabilities(self.logits.numpy())

    @property
    def label(self) -> np.ndarray:
        """``(H, W)`` uint8 class map."""
        return logits_to_label(self.logits.numpy())

    def semantic_target(self) -> torch.Tensor | None:
        """Mean of the fused features over the prompted classes ``(C, g, g)``, or ``None`` if none was."""
        if not self.present.any():
            return None
        return self.fused[torch.from_numpy(self.present)].float().mean(dim=0)


def foreground_probabilities(logits: np.ndarray) -> np.ndarray:
    """Per-class sigmoid of logits ``(K-1, ...)``, float32; exactly 0 for unprompted classes."""
    probs = (1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))).astype(np.float32)
    probs[logits <= ABSENT_LOGIT / 2] = 0.0
    return probs


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """``(K, ...)`` distribution ``softmax([0, l_1, ..., l_{K-1}])`` from foreground logits ``(K-1, ...)``."""
    full = np.concatenate([np.zeros_like(logits[:1]), logits], axis=0).astype(np.float32)
    full -= full.max(axis=0, keepdims=True)
    np.exp(full, out=full)
    full /= full.sum(axis=0, keepdims=True)
    return full


def nested_box_logits(logits: torch.Tensor, prompts: Prompts) -> torch.Tensor:
    """Resolve overlaps of nested box prompts in favour of the inner structure.

    SAM-family models segment the most salient object in a box. For a ring-shaped class whose box
    encloses another class's box (ACDC's myocardium around the left-ventricle cavity), the outer
    prompt returns the inner object, and the higher-logit rule then gives part of it to the wrong
    class. Here, wherever the inner class's logit is positive, the outer class's logit is capped at
    minus that logit, so the inner class wins there; the outer class keeps what lies outside.
    Classes whose boxes are not nested are untouched; point prompts have no boxes and are unchanged.

    Args:
        logits: ``(K-1, H, W)`` foreground logits, as :meth:`FoundationTeacher.decode` returns them.
        prompts: the prompts that produced them.
    """
    if prompts.boxes is None:
        return logits
    rows = np.flatnonzero(prompts.present)
    b = prompts.boxes
    out = logits.clone()
    for a in rows:
        for c in rows:
            if a == c:
                continue
            inside = b[c, 0] >= b[a, 0] and b[c, 1] >= b[a, 1] and b[c, 2] <= b[a, 2] and b[c, 3] <= b[a, 3]
            smaller = (b[c, 2] - b[c, 0] + 1) * (b[c, 3] - b[c, 1] + 1) < (b[a, 2] - b[a, 0] + 1) * (b[a, 3] - b[a, 1] + 1)
            if inside and smaller:
                inner = logits[c]
                out[a] = torch.where(inner > 0, torch.minimum(out[a], -inner), out[a])
    return out


def logits_to_label(logits: np.ndarray) -> np.ndarray:
    """Class map: background where no logit is positive, else the class with the highest logit."""
    best = logits.argmax(axis=0)
    return np.where(logits.max(axis=0) > 0, best + 1, 0).astype(np.uint8)


def _resolve_device(name: str) -> torch.device:
    return select_device(name, "teacher.device")


class FoundationTeacher(ABC):
    """A frozen SAM-family model behind one interface.

    Args:
        layers: teacher layer per student layer (student layer ``i+1`` <- ``layers[i]``); the name
            :data:`FUSED` stands for the prompt-conditioned features. Empty: :meth:`default_layers`.
        token_grid: side of the grid encoder features are pooled to.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: images per encoder pass.

    Subclasses set :attr:`name`, :attr:`spec`, :attr:`encoder`, :attr:`prompt_encoder` and
    :attr:`mask_decoder` (SAM's module API) and implement the abstract methods.
    """

    name: str = "teacher"
    spec: PreprocessSpec
    encoder: nn.Module
    prompt_encoder: nn.Module
    mask_decoder: nn.Module

    def __init__(self, layers: Sequence[str] = (), token_grid: int = 16, device: str = "cpu", batch_size: int = 4) -> None:
        self.token_grid = int(token_grid)
        #: overlap rule of multi-class box prompts: "logit" (higher logit wins) or "nested"
        #: (:func:`nested_box_logits` first); set from ``teacher.overlap`` by :func:`build_teacher`.
        self.overlap = "logit"
        self.batch_size = max(1, int(batch_size))
        self.device = _resolve_device(device)
        self.layers = tuple(layers)

    # ---- what subclasses provide ----------------------------------------------------------------

    @abstractmethod
    def default_layers(self) -> tuple[str, ...]:
        """The default student-to-teacher layer map (see docs/teachers.md)."""

    @abstractmethod
    def available_layers(self) -> tuple[str, ...]:
        """Names of the encoder submodules whose outputs can be distillation targets."""

    @property
    @abstractmethod
    def weights_id(self) -> str:
        """Digest identifying the weights (part of the feature-cache key)."""

    @abstractmethod
    def layer_output_to_map(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """Turn the raw output of encoder submodule ``name`` into a ``(B, C, h, w)`` map."""

    # ---- identity -------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """Teacher name, weights and preprocessing: what the features depend on besides the image."""
        return f"{self.name}|{self.weights_id}|{self.spec.key}"

    @property
    def layer_map(self) -> dict[int, str]:
        """Student layer (1-based) -> teacher layer name."""
        return {i + 1: name for i, name in enumerate(self.layers)}

    @property
    def visual_layers(self) -> tuple[str, ...]:
        """The encoder layers of the layer map (everything but :data:`FUSED`), in map order."""
        return tuple(n for n in self.layers if n != FUSED)

    def _modules(self) -> list[nn.Module]:
        return [self.encoder, self.prompt_encoder, self.mask_decoder]

    def _finalize(self) -> None:
        """Called by subclasses once the networks exist: check the layer map, then freeze the networks.

        Frozen means: on the device, in eval mode, no gradients.
        """
        self.layers = self.layers or self.default_layers()
        known = set(self.available_layers()) | {FUSED}
        for i, name in enumerate(self.layers):
            if name not in known:
                raise ConfigError(
                    f"teacher.layers[{i}]: {self.name} has no layer {name!r}; valid: {', '.join(sorted(known))}"
                )
        if list(self.layers).count(FUSED) > 1:
            raise ConfigError(f"teacher.layers: {FUSED!r} may be used once")
        for m in self._modules():
            m.to(self.device).eval()
            for p in m.parameters():
                p.requires_grad_(False)

    # ---- encoder --------------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, SliceGeometry]:
        """The canvas ``(3, S, S)`` and geometry of one image (see :mod:`uncol.teachers.preprocessing`)."""
        return preprocess(image, self.spec)

    @torch.no_grad()
    def run_encoder(self, canvases: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Encoder pass on canvases ``(B, 3, S, S)``: the visual layers' maps and the image embedding."""
        captured: dict[str, torch.Tensor] = {}

        def capture(name: str) -> Callable[..., None]:
            def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
                captured[name] = output

            return hook

        handles = [self.encoder.get_submodule(n).register_forward_hook(capture(n)) for n in self.visual_layers]
        try:
            embedding = self.encoder(canvases.to(self.device))
        finally:
            for h in handles:
                h.remove()
        return {n: self.layer_output_to_map(n, captured[n]) for n in self.visual_layers}, embedding

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray], keep_embedding: bool = True) -> list[Encoded]:
        """Encode 2D images (no cache): pooled visual features and, optionally, the embedding."""
        out: list[Encoded] = []
        for start in range(0, len(images), self.batch_size):
            prepared = [self.preprocess(im) for im in images[start : start + self.batch_size]]
            maps, embedding = self.run_encoder(torch.stack([p[0] for p in prepared]))
            for i, (_, geom) in enumerate(prepared):
                feats = {n: pool_to_grid(m[i], geom, self.token_grid).half().cpu() for n, m in maps.items()}
                emb = embedding[i].half().cpu() if keep_embedding else None
                out.append(Encoded(feats, emb, geom))
        return out

    # ---- prompts and decoder --------------------------------------------------------------------

    def gt_prompts(
        self, mask: np.ndarray, num_classes: int, rng: np.random.Generator | None = None, jitter_at_1024: float = 0.0
    ) -> Prompts:
        """Boxes from a ground-truth (or pseudo-label) class map, jitter given at 1024 px and scaled."""
        jitter = jitter_in_pixels(jitter_at_1024, self.spec.size, mask.shape, self.spec.keep_aspect)
        return boxes_from_mask(mask, num_classes, jitter, rng)

    @torch.no_grad()
    def decode(self, encoded: Encoded, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the prompt encoder and mask decoder on one encoded image.

        Returns:
            ``(logits, fused)``: ``(K-1, H, W)`` float32 logits at the original size
            (:data:`ABSENT_LOGIT` for classes without a prompt) and ``(K-1, C, g, g)`` fused features
            pooled to the token grid (zeros for classes without a prompt).
        """
        if encoded.embedding is None:
            raise ValueError("decode needs the image embedding (encode with keep_embedding=True)")
        geom = encoded.geometry
        n_fg = prompts.num_foreground
        logits = torch.full((n_fg, *geom.original), ABSENT_LOGIT, dtype=torch.float32)
        channels = encoded.embedding.shape[0]
        fused = torch.zeros((n_fg, channels, self.token_grid, self.token_grid), dtype=torch.float32)
        rows = np.flatnonzero(prompts.present)
        if len(rows) == 0:
            return logits, fused
        boxes = points = None
        if prompts.boxes is not None:
            boxes = torch.from_numpy(geom.boxes_to_canvas(prompts.boxes[rows]))[:, None, :].to(self.device)
        if prompts.points is not None and prompts.point_labels is not None:
            coords = torch.from_numpy(geom.points_to_canvas(prompts.points[rows])).to(self.device)
            points = (coords, torch.from_numpy(prompts.point_labels[rows]).to(self.device))
        low_res, fused_full = self._decode(encoded.embedding[None].float().to(self.device), boxes, points)
        logits[torch.from_numpy(rows)] = canvas_to_original(low_res.float().cpu(), geom)
        fused[torch.from_numpy(rows)] = pool_to_grid(fused_full.float().cpu(), geom, self.token_grid)
        if self.overlap == "nested":
            logits = nested_box_logits(logits, prompts)
        return logits, fused

    def _decode(
        self,
        embedding: torch.Tensor,
        boxes: torch.Tensor | None,
        points: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's prompt encoder + mask decoder for P prompts on one image embedding ``(1, C, h, w)``.

        Returns ``(low-res logits (P, hm, wm), fused image features (P, C, h, w))``; the fused features
        are the image tokens output by the decoder's two-way transformer, caught with a hook.
        """
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: object, output: tuple[torch.Tensor, torch.Tensor]) -> None:
            captured.append(output[1])  # (queries, keys): keys are the prompt-conditioned image tokens

        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        handle = self.mask_decoder.transformer.register_forward_hook(hook)
        try:
            low_res, _ = self.mask_decoder(
                image_embeddings=embedding,
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        finally:
            handle.remove()
        p, c, h, w = low_res.shape[0], embedding.shape[1], embedding.shape[2], embedding.shape[3]
        fused = captured[0].transpose(1, 2).reshape(p, c, h, w)
        return low_res[:, 0], fused

    # ---- whole images and volumes ---------------------------------------------------------------

    def predict(self, image: np.ndarray, prompts: Prompts, cache: FeatureSource | None = None) -> TeacherOutput:
        """Features, fused features and logits of one 2D image ``(C, H, W)`` or ``(H, W)``.

        With a cache, the encoder runs only when the image is not cached yet.
        """
        encoded = (cache.encode([image], embeddings=True) if cache is not None else self.encode([image]))[0]
        logits, fused = self.decode(encoded, prompts)
        return TeacherOutput(encoded.features, fused, prompts.present.copy(), logits)

    def predict_batch(
        self, images: Sequence[np.ndarray], prompts: Sequence[Prompts], cache: FeatureSource | None = None
    ) -> list[TeacherOutput]:
        """:meth:`predict` for several images: one batched cache lookup / encoder pass, then one decode each."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
        encoded = cache.encode(images, embeddings=True) if cache is not None else self.encode(images)
        out = []
        for enc, p in zip(encoded, prompts, strict=True):
            logits, fused = self.decode(enc, p)
            out.append(TeacherOutput(enc.features, fused, p.present.copy(), logits))
        return out

    def predict_volume(
        self,
        volume: np.ndarray,
        axis: int,
        prompts: Sequence[Prompts],
        cache: FeatureSource | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Foreground logits ``(K-1, *spatial)`` of a volume ``(C, D0, D1, D2)``, slice by slice.

        Args:
            volume: channel-first 3D image.
            axis: spatial axis to slice along.
            prompts: one :class:`Prompts` per slice; slices without any prompt are not encoded at all.
            cache: optional feature cache (embeddings are cached too).
            progress: called with the number of slices finished after each batch.
        """
        n = volume.shape[axis + 1]
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} slices")
        n_fg = prompts[0].num_foreground if prompts else 0
        spatial = volume.shape[1:]
        logits = np.full((n_fg, *spatial), ABSENT_LOGIT, dtype=np.float32)
        todo = [s for s in range(n) if prompts[s].present.any()]
        if progress is not None and len(todo) < n:
            progress(n - len(todo))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            images = [np.take(volume, s, axis=axis + 1) for s in chunk]
            encoded = cache.encode(images, embeddings=True) if cache is not None else self.encode(images)
            for s, enc in zip(chunk, encoded, strict=True):
                lg, _ = self.decode(enc, prompts[s])
                index: list[slice | int] = [slice(None)] * (len(spatial) + 1)
                index[axis + 1] = s
                logits[tuple(index)] = lg.numpy()
            if progress is not None:
                progress(len(chunk))
        return logits


class FeatureSource(Protocol):
    """What :meth:`FoundationTeacher.predict` needs from a cache (see :class:`uncol.teachers.cache.FeatureCache`)."""

    def encode(self, images: Sequence[np.ndarray], embeddings: bool = False) -> list[Encoded]:
        """Encoded images, from the cache where possible."""
        ...
