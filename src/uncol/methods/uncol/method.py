"""UnCoL: uncertainty-informed collaborative learning (Lu, Hong and Yang, arXiv:2512.13101).

Two stages in one run (``method.uncol.stage1_fraction`` of ``train.iterations`` for the first):

**Stage 1, data-efficient pretraining** (labeled data only). With probability
``method.uncol.copy_paste_prob`` a labeled image is mixed with another labeled image of the batch by
copy-paste (``method.uncol.copy_paste_mode``: BCP's one box, the default, or the paper's patch mosaic, ``copy_paste_ratio`` = 60% of the
patches; labels and teacher targets mixed identically), otherwise shown unmixed. The
student is trained with Dice + cross-entropy plus dual-path knowledge distillation from the frozen
foundation teacher, with a Gaussian-ramped weight:

* visual path: student ViT layers 1-3 -> light FFN projections -> MSE against the teacher's encoder
  features at the mapped layers (``teacher.layers``);
* semantic path: the last student layer -> FFN -> MSE against the teacher's prompt-fused features
  (ground-truth boxes), on tokens where a class was prompted.

The knowledge adapter attends to the student's own tokens, as at inference (``method.uncol.adapter_context=self``,
the default) or, as in the paper, to the teacher's prompt-fused features (``teacher``).

The specialized teacher, an EMA of the student (momentum ``method.uncol.ema_decay``), follows the student
through both stages (paper Sec. 3.5.2: "during both training stages"). Each stage has its own learning-rate
schedule, restarted at ``train.lr`` at the switch (``method.uncol.lr_schedule``; the paper trains each stage
for its own 15k iterations at lr 0.01).

**Stage 2, semi-supervised fine-tuning.** For each unlabeled image both teachers give
class probabilities: the EMA teacher directly, the foundation teacher prompted from the EMA teacher's
pseudo-label (boxes, jittered as the ground-truth boxes of stage 1, or low-uncertainty points).
Uncertainty-aware pseudo-labels (:func:`uncol.methods.pseudo_labels.fuse_pseudo_labels`) keep the pixels
where at least one teacher's entropy is below a ramped threshold, ``(0.75 + 0.25 r) x ln 2`` nats as UA-MT's
reference code (``method.uncol.threshold_base``). Labeled and unlabeled images are mixed both ways by copy-paste
(bidirectional, as BCP); labels and pseudo-labels are mixed with the same mask. Loss: Dice + CE on the
labeled pixels, ``method.uncol.consistency_weight`` (0.5) x Gaussian ramp x Dice + CE on the confident
pseudo-labelled pixels, plus the visual distillation (semantic distillation off). With
``adapter_context=teacher`` the adapter attends, token by token of the mixed image, to the foundation teacher's prompt-fused features where the pixels
come from a labeled image and to the EMA teacher's last-layer tokens where they come from an unlabeled one
(paper Sec. 3.5.2; ``method.uncol.stage2_labeled_context``).

Every loss term, the ramps, the threshold, each teacher's confident fraction (``confident_general``,
``confident_specialized``, ``confident_fused``) and the fraction of pseudo-labelled pixels supervised by
each teacher, by both and by neither are returned for the logs. Table 4's ablations are combinations of
``method.uncol.distill`` and ``method.uncol.pseudo_labels`` (docs/methods.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uncol.atomic import atomic_write_json
from uncol.config import Config
from uncol.data.copy_paste import mix, mix_with_previous, sample_mix_masks
from uncol.data.training import SampleSet
from uncol.ema import EMA
from uncol.errors import ConfigError
from uncol.methods.base import BatchPhase, DataNeeds, StepContext, TrainingMethod, check_range, run_phases
from uncol.methods.consistency import uncertainty_threshold
from uncol.methods.losses import SegmentationLoss, masked_dice_ce
from uncol.methods.ramps import gaussian_rampup
from uncol.methods.registry import register_method
from uncol.methods.uncertainty import class_argmax, entropy
from uncol.methods.uncol.distillation import Projection, token_mask, tokens_of
from uncol.methods.uncol.foundation_memo import FoundationLabelMemo
from uncol.methods.uncol.options import UnCoLOptions
from uncol.methods.uncol.pseudo_labels import fuse_pseudo_labels, gate_classes
from uncol.models.student import UnCoLStudent

#: Options that only stage 2 reads: ablations of stage 2 can branch from one stage-1 checkpoint.
STAGE2_OPTIONS = frozenset(
    f"method.uncol.{k}"
    for k in (
        "pseudo_labels", "threshold_start", "threshold_end", "threshold_base", "consistency_weight",
        "consistency_rampup", "stage2_visual", "teacher_min_dice", "stage2_labeled_batch", "stage2_box_jitter",
        "stage2_labeled_context", "foundation_refresh", "unlabeled_batch_size",
    )
)


def stage1_steps(cfg: Config) -> int:
    """Steps of stage 1: every step without pseudo-labels, else ``stage1_fraction`` of ``train.iterations``."""
    m: UnCoLOptions = cfg.method.options
    it = cfg.train.iterations
    return it if m.pseudo_labels == "none" else int(round(m.stage1_fraction * it))


@register_method
class UnCoLMethod(TrainingMethod):
    """The UnCoL training method (both stages, 2D and 3D)."""

    name = "uncol"
    options_class = UnCoLOptions

    def __init__(self, cfg: Config, network: nn.Module) -> None:
        super().__init__(cfg, network)
        if not isinstance(network, UnCoLStudent):
            raise ConfigError(f"model.arch: method.name=uncol needs the UnCoL student, got {type(network).__name__}")
        m: UnCoLOptions = self.options
        self.m = m
        self.stage1_steps = stage1_steps(cfg)
        self.use_visual = m.distill in ("both", "visual")
        self.use_semantic = m.distill in ("both", "semantic")
        self.stage2_visual = self.use_visual and m.stage2_visual
        self.use_general_pl = m.pseudo_labels in ("uncertainty", "average", "generalized")
        self.has_teacher = cfg.teacher.name != "none"
        # Stage-1 adapter context: the teacher's prompt-fused features (which the semantic targets are).
        self.teacher_context = m.adapter_context == "teacher" and self.has_teacher
        self.need_semantic = self.use_semantic or self.teacher_context
        self.patch = int(network.vit_patch)
        self.cp_patch = m.copy_paste_patch or self.patch
        # Teacher targets are maps of whole samples: volumes padded to train.pad_to (3D), from which the views
        # are cropped at multiples of vit_patch, or patch-sized samples.
        self.sample_size = cfg.train.padded_size
        self.grid = tuple(int(p) // self.patch for p in self.sample_size)
        self.sup_loss = SegmentationLoss(cfg.train.loss_dice_weight, cfg.train.loss_ce_weight)
        self.ema = EMA(network, m.ema_decay)
        self.projections = nn.ModuleDict()
        self.visual_pairs: list[tuple[int, str]] = []  # (student layer index, teacher layer)
        self.semantic_layer: int | None = None
        self.teacher: Any = None
        self.targets_l: Any = None
        self.targets_u: Any = None
        # Stage-2 foundation decodes reused within windows (method.uncol.foundation_refresh), set up with the data.
        self.memo: FoundationLabelMemo | None = None
        # Classes on which the foundation teacher may vote (method.uncol.teacher_min_dice); None: all.
        self.general_classes: torch.Tensor | None = None
        if self.has_teacher and (self.use_visual or self.need_semantic or self.use_general_pl):
            from uncol import teachers

            self.teacher = teachers.build_teacher(cfg.teacher)
            self.cache = teachers.open_cache(cfg, self.teacher)
            depth = len(network.vit.layers)
            for student_layer, name in self.teacher.layer_map.items():
                if student_layer > depth:
                    raise ConfigError(
                        f"teacher.layers: {len(self.teacher.layers)} entries but the student has {depth} layers"
                    )
                if name == teachers.FUSED:
                    self.semantic_layer = student_layer - 1
                else:
                    self.visual_pairs.append((student_layer - 1, name))
            if self.use_semantic and self.semantic_layer is None:
                raise ConfigError(
                    f"teacher.layers: method.uncol.distill={m.distill} needs a student layer mapped to '{teachers.FUSED}'"
                )

    # ---- configuration --------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Ranges of UnCoL's options, and what they need from the rest of the configuration."""
        m: UnCoLOptions = cfg.method.options
        check_range("method.uncol.ema_decay", m.ema_decay, 0, 1, open_low=True, open_high=True)
        for k in ("consistency_rampup", "stage1_fraction", "distill_rampup", "copy_paste_ratio", "self_context_prob",
                  "teacher_min_dice", "copy_paste_prob", "foundation_refresh"):
            check_range(f"method.uncol.{k}", getattr(m, k), 0, 1)
        for k in ("consistency_weight", "distill_weight", "copy_paste_patch", "stage2_labeled_batch",
                  "unlabeled_batch_size"):
            check_range(f"method.uncol.{k}", getattr(m, k), 0)
        # Fractions of ln K stop at 1 (the largest entropy); fractions of ln 2 may exceed it when K > 2.
        top = 1.0 if m.threshold_base == "lnK" else math.inf
        if not 0.0 < m.threshold_start <= m.threshold_end <= top:
            raise ConfigError(
                "method.uncol.threshold_start/threshold_end: need 0 < start <= end"
                f"{' <= 1 with threshold_base=lnK' if top == 1.0 else ''}, got {m.threshold_start}, {m.threshold_end}"
            )
        if not cfg.model.arch.startswith("uncol_student"):
            raise ConfigError(
                f"model.arch: method.name=uncol trains the UnCoL student; use uncol_student{cfg.spatial_dims}d, "
                f"not {cfg.model.arch}"
            )
        needs_teacher = m.distill != "none" or m.pseudo_labels in ("uncertainty", "average", "generalized")
        if needs_teacher and cfg.teacher.name == "none":
            raise ConfigError(
                f"teacher.name: method.uncol.distill={m.distill} / method.uncol.pseudo_labels={m.pseudo_labels} need "
                "the foundation teacher (teacher.name=litemedsam), or set method.uncol.distill=none and "
                "method.uncol.pseudo_labels=specialized|none"
            )
        if m.pseudo_labels != "none" and m.stage1_fraction < 1.0 and m.unlabeled_batch_size < 1:
            raise ConfigError("method.uncol.unlabeled_batch_size: UnCoL stage 2 needs unlabeled images (>= 1 per batch)")
        check_range("method.uncol.copy_paste_box", m.copy_paste_box, 0, 1, open_low=True)
        if cfg.spatial_dims == 2 and not cfg.train.resize_2d:
            raise ConfigError("train.resize_2d: UnCoL caches teacher features of whole slices; set train.resize_2d=true")
        token = cfg.model.vit_patch or (16 if cfg.spatial_dims == 2 else 8)
        if any(p % token for p in cfg.train.pad_to):
            raise ConfigError(
                f"train.pad_to: UnCoL's teacher targets are maps of the padded volumes on the token grid; {cfg.train.pad_to} "
                f"must be divisible by model.vit_patch={token}"
            )
        if m.copy_paste_patch and m.copy_paste_patch % token:
            raise ConfigError(
                "method.uncol.copy_paste_patch: must be a multiple of model.vit_patch, so that teacher features and "
                f"EMA tokens can be mixed with the same mask as the pixels; got {m.copy_paste_patch}"
            )

    @classmethod
    def speed_options(cls) -> frozenset[str]:
        return frozenset({"method.uncol.lazy_unlabeled_targets"})

    @classmethod
    def batch_phases(cls, cfg: Config) -> tuple[BatchPhase, ...]:
        """Stage 1 reads ``train.batch_size`` labeled images; stage 2 the first ``stage2_labeled_batch`` of
        them and at most as many unlabeled images as it pairs them with (labeled image i with unlabeled
        image i mod Bu)."""
        m: UnCoLOptions = cfg.method.options
        b = cfg.train.batch_size
        n = min(b, m.stage2_labeled_batch or b)
        stage2 = BatchPhase(stage1_steps(cfg), n, min(n, m.unlabeled_batch_size))
        return run_phases(cfg.train.iterations, BatchPhase(0, b, 0), stage2)

    def data_needs(self) -> DataNeeds:
        # Crops of padded volumes (train.pad_to) start at whole tokens: the teacher targets crop exactly.
        return DataNeeds(crop_multiple=self.patch, phases=self.batch_phases(self.cfg))

    # ---- set-up ---------------------------------------------------------------------------------

    def setup_data(
        self,
        labeled: SampleSet,
        unlabeled: SampleSet | None,
        run_dir: Path,
        bar: Callable[..., Any],
    ) -> None:
        """Precompute the teacher targets of every training sample (encoder outputs come from the cache)."""
        if self.cfg.spatial_dims == 3:
            size = self.sample_size
            key = "train.pad_to" if self.cfg.train.pad_to else "train.patch_size"
            for sset in (labeled, unlabeled):
                for s in [] if sset is None else sset.samples:
                    if tuple(s.image.shape[1:]) != size:
                        raise ConfigError(
                            f"{key}: UnCoL 3D computes teacher features on whole volumes; {s.source} has "
                            f"shape {list(s.image.shape[1:])}, larger than {key}={list(size)} (set train.pad_to to a "
                            "size that holds every training volume; patches of train.patch_size are cropped from it)"
                        )
        if self.teacher is None:
            return
        from uncol.methods.uncol.jittered_targets import JitteredPromptTargets as Targets

        # Stage-2 boxes from pseudo-labels (and the reliability gate's from the ground truth) are jittered.
        jitter = self.cfg.teacher.box_jitter_px if self.m.stage2_box_jitter else 0.0
        with bar(total=len(labeled), desc="teacher targets (labeled)", leave=False) as pb:
            self.targets_l = Targets(
                self.teacher, self.cache, labeled, self.cfg, self.grid, semantic=self.need_semantic,
                progress=lambda i, n: pb.update(1), box_jitter_px=jitter,
            )
        if self.uses_unlabeled and unlabeled is not None and (self.stage2_visual or self.use_general_pl):
            with bar(total=len(unlabeled), desc="teacher targets (unlabeled)", leave=False) as pb:
                self.targets_u = Targets(
                    self.teacher, self.cache, unlabeled, self.cfg, self.grid, embeddings=self.use_general_pl,
                    lazy=self.m.lazy_unlabeled_targets, progress=lambda i, n: pb.update(1), box_jitter_px=jitter,
                )
        if self.m.teacher_min_dice > 0 and self.use_general_pl and self.targets_u is not None:
            self._measure_reliability(run_dir)
        if self.m.foundation_refresh > 0 and self.use_general_pl and self.targets_u is not None:
            stage2 = self.cfg.train.iterations - self.stage1_steps
            self.memo = FoundationLabelMemo(
                self.targets_u, self.stage1_steps, max(1, round(self.m.foundation_refresh * stage2)), self.cfg.train.seed
            )
        dim = self.network.vit_dim
        channels = self.targets_l.visual_channels
        if self.use_visual:
            for j, name in self.visual_pairs:
                self.projections[f"visual{j + 1}"] = Projection(dim, channels[name])
        if self.need_semantic:
            width = self.targets_l.semantic_channels
            if self.use_semantic and self.semantic_layer is not None:
                self.projections[f"semantic{self.semantic_layer + 1}"] = Projection(dim, width)
            if self.teacher_context and width not in self.network.adapter.context_dims:
                raise ConfigError(
                    f"model.context_dims: the adapter attends to the teacher's fused features of width {width}; "
                    f"add {width} to model.context_dims (now {list(self.network.adapter.context_dims)}), or set "
                    "method.uncol.adapter_context=self"
                )

    def _measure_reliability(self, run_dir: Path) -> None:
        """The class-wise gate of the foundation teacher (``method.uncol.teacher_min_dice``), from the labeled data.

        Seeded, so a resumed run recomputes the same gate; written to ``teacher_reliability.json``.
        """
        rng = np.random.default_rng([self.cfg.train.seed, 17])
        dice = self.targets_l.class_reliability(rng)
        keep = ~(dice < self.m.teacher_min_dice)  # NaN (class never seen): no evidence against the teacher
        self.general_classes = torch.from_numpy(keep)
        names = self.cfg.data.class_names or [str(c) for c in range(len(dice))]
        atomic_write_json(
            run_dir / "teacher_reliability.json",
            {
                "min_dice": self.m.teacher_min_dice,
                "prompt": self.cfg.teacher.prompt,
                "dice": {n: (None if math.isnan(d) else round(float(d), 4)) for n, d in zip(names, dice, strict=True)},
                "voting_classes": [n for n, k in zip(names, keep, strict=True) if k],
            },
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.network, "ema": self.ema, "projections": self.projections}

    def extra_state(self) -> dict[str, Any]:
        return {} if self.memo is None else {"foundation_memo": self.memo.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.memo is not None:  # set up with the data, which the engine prepares before it restores
            self.memo.load_state(state.get("foundation_memo", {}), self.ema.module)

    def deferred_options(self) -> tuple[int, frozenset[str]]:
        # Stage 1 reads none of these (the EMA teacher follows the student from the first step, but only
        # stage 2 reads it; the reliability gate is measured before training and used in stage 2 only).
        # `pseudo_labels=none` is not deferred: it removes stage 2, which moves the stage switch.
        # `ema_decay` and `lr_schedule` are read in stage 1.
        if not self.uses_unlabeled:
            return 0, frozenset()
        return self.stage1_steps, STAGE2_OPTIONS

    def parameters(self) -> Iterator[nn.Parameter]:
        yield from (p for p in self.network.parameters() if p.requires_grad)
        yield from self.projections.parameters()

    def train(self, mode: bool = True) -> None:
        self.network.train(mode)
        self.projections.train(mode)

    # ---- pieces ---------------------------------------------------------------------------------

    def _patch_masks(
        self, n: int, spatial: tuple[int, ...], rng: np.random.Generator, device: torch.device, prob: float = 1.0
    ) -> torch.Tensor:
        """Copy-paste masks ``(n, *spatial)`` (``method.uncol.copy_paste_mode``), each drawn with probability
        ``prob`` (all False otherwise: unmixed); box edges fall on token boundaries, so token masks are exact."""
        m = self.m
        masks = sample_mix_masks(n, spatial, rng, mode=m.copy_paste_mode, unit=self.patch, patch=self.cp_patch,
                                 ratio=m.copy_paste_ratio, box_fraction=m.copy_paste_box, prob=prob)
        return torch.from_numpy(masks).to(device)

    def _distill(self, layers: list[torch.Tensor], visual: dict[str, torch.Tensor] | None) -> torch.Tensor:
        loss = layers[0].new_zeros(())
        if visual is None:
            return loss
        for j, name in self.visual_pairs:
            pred = self.projections[f"visual{j + 1}"](layers[j])
            loss = loss + F.mse_loss(pred, tokens_of(visual[name]))
        return loss

    def _semantic(self, layers: list[torch.Tensor], target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        assert self.semantic_layer is not None
        pred = self.projections[f"semantic{self.semantic_layer + 1}"](layers[self.semantic_layer])
        err = (pred - tokens_of(target)).pow(2).mean(dim=-1)  # (B, N)
        w = valid.flatten(1).to(err.dtype)
        return (err * w).sum() / w.sum().clamp_min(1.0)

    def distill_weight(self, step: int) -> float:
        """Weight of the distillation loss: Gaussian ramp over ``distill_rampup`` of stage 1, then constant."""
        span = self.m.distill_rampup * self.stage1_steps
        ramp = 1.0 if span <= 0 else gaussian_rampup(min(1.0, step / span))
        return self.m.distill_weight * ramp

    def lr_factor(self, step: int, schedule: Callable[[int, int], float]) -> float:
        """``train.schedule`` per stage (``method.uncol.lr_schedule=per_stage``): restarted at ``train.lr`` at
        the switch, as the paper trains each stage for its own iterations at lr 0.01; or over the whole run."""
        iterations = self.cfg.train.iterations
        if self.m.lr_schedule == "whole_run" or self.stage1_steps >= iterations:
            return schedule(step, iterations)
        if step < self.stage1_steps:
            return schedule(step, self.stage1_steps)
        return schedule(step - self.stage1_steps, iterations - self.stage1_steps)

    def threshold(self, step: int) -> float:
        """Entropy threshold (nats) of the pseudo-label gate at ``step`` of stage 2: UA-MT's
        ``(start + (end - start) r) x base``, ``r`` :meth:`stage2_ramp`, base ``ln 2`` or ``ln K``."""
        m = self.m
        return uncertainty_threshold(
            self.stage2_ramp(step), self.cfg.data.num_classes, m.threshold_start, m.threshold_end, m.threshold_base
        )

    def stage2_ramp(self, step: int) -> float:
        """Gaussian ramp of the pseudo-label weight and entropy threshold over ``consistency_rampup`` of stage 2."""
        span = self.m.consistency_rampup * (self.cfg.train.iterations - self.stage1_steps)
        t = step - self.stage1_steps
        return 1.0 if span <= 0 else gaussian_rampup(min(1.0, t / span))

    # ---- steps ----------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.step < self.stage1_steps:
            return self._stage1(batch, ctx)
        return self._stage2(batch, ctx)

    def after_step(self, ctx: StepContext) -> None:
        # The specialized teacher follows the student "during both training stages" (paper Sec. 3.5.2),
        # so it enters stage 2 as an average of the stage-1 students, not a copy of the last one.
        self.ema.update(self.network, ctx.step)

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None, own: torch.Tensor | None) -> Any:
        """Student forward; images flagged in ``own`` attend to their own tokens instead of ``context``."""
        if context is None or own is None or not bool(own.any()):
            return self.network(x, context=context, return_features=True)
        if bool(own.all()):
            return self.network(x, return_features=True)
        keep = ~own
        a = self.network(x[own], return_features=True)
        t = self.network(x[keep], context=context[keep], return_features=True)
        order = torch.cat([own.nonzero()[:, 0], keep.nonzero()[:, 0]]).argsort()

        def merge(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.cat([u, v])[order]

        return type(t)(
            logits=merge(a.logits, t.logits),
            layers=[merge(u, v) for u, v in zip(a.layers, t.layers, strict=True)],
            grid=t.grid,
            adapted=merge(a.adapted, t.adapted),
        )

    def _stage1(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch["image"], batch["label"]
        dev = x.device
        b = x.shape[0]
        rng = np.random.default_rng([self.cfg.train.seed, ctx.step, 11])
        m = self._patch_masks(b, tuple(x.shape[2:]), rng, dev, self.m.copy_paste_prob)
        x_mix = mix_with_previous(x, m[:, None])  # each image's partner is the previous one of the batch
        y_mix = mix_with_previous(y, m)
        mt = token_mask(m, self.patch)[:, None]
        ids, views = batch["ids"], batch["geometry"]

        visual = sem = valid = None
        if self.targets_l is not None and self.use_visual:
            v = self.targets_l.visual_targets(ids, views, dev)
            visual = {n: mix_with_previous(t, mt) for n, t in v.items()}
        if self.targets_l is not None and self.need_semantic:
            s, ok = self.targets_l.semantic_targets(ids, views, dev)
            sem, valid = mix_with_previous(s, mt), mix_with_previous(ok, mt[:, 0])
        context = sem if self.teacher_context else None
        own = None
        if context is not None and self.m.self_context_prob > 0:
            # Context dropout: some images attend to the student's own tokens, as at inference.
            own = torch.from_numpy(rng.random(b) < self.m.self_context_prob).to(dev)
        out = self._forward(x_mix, context, own)
        loss_sup = self.sup_loss(out.logits, y_mix)
        loss_vis = self._distill(out.layers, visual)
        loss_sem = (
            self._semantic(out.layers, sem, valid) if (self.use_semantic and sem is not None) else loss_sup.new_zeros(())
        )
        w = self.distill_weight(ctx.step) if (self.use_visual or self.use_semantic) else 0.0
        loss = loss_sup + w * (loss_vis + loss_sem)
        return {
            "loss": loss,
            "stage": torch.tensor(1.0),
            "loss_sup": loss_sup.detach(),
            "loss_visual": loss_vis.detach(),
            "loss_semantic": loss_sem.detach(),
            "w_distill": torch.tensor(w),
            # Share of the batch shown as a copy-paste mix (method.uncol.copy_paste_prob); the rest unmixed.
            "copy_paste_mixed": m.flatten(1).any(dim=1).float().mean(),
        }

    @torch.no_grad()
    def _teachers(
        self, xu: torch.Tensor, batch: dict[str, Any], ctx: StepContext, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float], torch.Tensor]:
        """Pseudo-labels ``(Bu, *spatial)``, their mask, the per-teacher fractions of the unlabeled images,
        and the EMA teacher's last-layer tokens of them (the adapter's context in stage 2)."""
        out = self.ema(xu, return_features=True)
        tokens = out.layers[-1]
        p_s = torch.softmax(out.logits, dim=1)
        p_g = None
        if self.use_general_pl and self.targets_u is not None:
            if self.memo is not None:
                p_g, fresh = self.memo.probabilities(
                    batch["unlabeled_ids"], batch["unlabeled_geometry"], self.ema.module, ctx.step, p_s.device
                )
            else:
                rng = np.random.default_rng([self.cfg.train.seed, ctx.step, 13])
                p_g = self.targets_u.pseudo_label_probabilities(batch["unlabeled_ids"], batch["unlabeled_geometry"], p_s, rng)
                fresh = len(batch["unlabeled_ids"])
            if self.general_classes is not None:
                # No vote where either teacher names a class the foundation teacher fails on the labeled data.
                p_g = gate_classes(p_g, p_s, self.general_classes)
        mode = self.m.pseudo_labels
        if p_g is not None:
            fused = fuse_pseudo_labels(p_g, p_s, threshold)
            stats = fused.fractions()
            # What the gate keeps: each teacher's confident share of the unlabeled pixels, and their union.
            stats["confident_general"] = stats["frac_general"] + stats["frac_both"]
            stats["confident_specialized"] = stats["frac_special"] + stats["frac_both"]
            stats["confident_fused"] = 1.0 - stats["frac_none"]
            # Share of the unlabeled images whose foundation pseudo-label was decoded at this step (1 without memo).
            stats["foundation_decoded"] = fresh / max(1, len(batch["unlabeled_ids"]))
        else:
            conf = float((entropy(p_s) < threshold).float().mean())
            stats = {"frac_specialized_confident": conf, "confident_specialized": conf}
        everywhere = torch.ones(p_s.shape[:1] + p_s.shape[2:], dtype=torch.bool, device=p_s.device)
        if mode == "uncertainty":
            assert p_g is not None
            return fused.labels, fused.mask, stats, tokens
        if mode == "average":
            assert p_g is not None
            return class_argmax((p_g + p_s) / 2), everywhere, stats, tokens
        if mode == "generalized":
            assert p_g is not None
            return class_argmax(p_g), everywhere, stats, tokens
        return class_argmax(p_s), everywhere, stats, tokens  # specialized

    def labeled_context(self, xl: torch.Tensor, ids: Sequence[int], views: Sequence[Any]) -> torch.Tensor:
        """Stage-2 adapter context of labeled views, as tokens ``(n, N, vit_dim)``.

        The paper's (``stage2_labeled_context=foundation``): the foundation teacher's prompt-fused features
        from ground-truth boxes, the stage-1 context, through the adapter's trainable projection; else (or
        without a foundation teacher) the EMA teacher's last-layer tokens.
        """
        if self.m.stage2_labeled_context == "foundation" and self.teacher_context and self.targets_l is not None:
            sem, _ = self.targets_l.semantic_targets(ids, views, xl.device)
            return self.network.adapter.context_tokens(sem)
        with torch.no_grad():
            return self.ema(xl, return_features=True).layers[-1]

    def _stage2_context(
        self, xl: torch.Tensor, ids_l: Sequence[int], views_l: Sequence[Any], tokens_u: torch.Tensor, mt: torch.Tensor
    ) -> torch.Tensor:
        """Adapter context ``(2n, N, vit_dim)`` of the mixed images ``[labeled-based, unlabeled-based]``: each
        token attends to the context of the image its pixels come from (``mt`` ``(n, 1, *grid)``: True = the
        other image), labeled ones to :meth:`labeled_context`, unlabeled ones to the EMA teacher's tokens."""
        tl = self.labeled_context(xl, ids_l, views_l)
        other = mt.flatten(2).transpose(1, 2)  # (n, N, 1), token order of the ViT
        return torch.cat([mix(tl, tokens_u, other), mix(tokens_u, tl, other)])

    def _stage2(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        n = min(batch["image"].shape[0], self.m.stage2_labeled_batch or batch["image"].shape[0])
        xl, yl, xu_all = batch["image"][:n], batch["label"][:n], batch["unlabeled_image"]
        dev = xl.device
        # Labeled image i is paired with unlabeled image i mod Bu: every labeled image is used, and the
        # teachers (the foundation teacher's decoder is the costly part) run once per unlabeled image.
        pair = [i % xu_all.shape[0] for i in range(n)]
        ids_l, views_l = batch["ids"][:n], batch["geometry"][:n]
        ids_u = [batch["unlabeled_ids"][j] for j in pair]
        views_u = [batch["unlabeled_geometry"][j] for j in pair]
        ramp = self.stage2_ramp(ctx.step)
        threshold = self.threshold(ctx.step)
        yu_all, conf_all, stats, tokens_u = self._teachers(xu_all, batch, ctx, threshold)
        xu, yu, conf_u = xu_all[pair], yu_all[pair], conf_all[pair]

        # Bidirectional copy-paste: unlabeled patches into labeled images and labeled patches into unlabeled.
        rng = np.random.default_rng([self.cfg.train.seed, ctx.step, 12])
        m = self._patch_masks(n, tuple(xl.shape[2:]), rng, dev)  # True: from the other image
        x_in, x_out = mix(xl, xu, m[:, None]), mix(xu, xl, m[:, None])
        y_in, y_out = mix(yl, yu, m), mix(yu, yl, m)
        lab_in, lab_out = ~m, m  # pixels that carry a ground-truth label
        ok_in, ok_out = conf_u & m, conf_u & ~m  # confident pseudo-labelled pixels (never labeled ones)
        x_mix = torch.cat([x_in, x_out])
        y_mix = torch.cat([y_in, y_out])
        is_lab = torch.cat([lab_in, lab_out])
        pseudo_ok = torch.cat([ok_in, ok_out])

        mt = token_mask(m, self.patch)[:, None]
        context = None
        if self.m.adapter_context == "teacher":
            context = self._stage2_context(xl, ids_l, views_l, tokens_u[pair], mt)
        out = self.network(x_mix, context=context, return_features=True)
        loss_sup = masked_dice_ce(out.logits, y_mix, is_lab)
        loss_pl = masked_dice_ce(out.logits, y_mix, pseudo_ok)
        loss_vis = loss_sup.new_zeros(())
        if self.stage2_visual and self.targets_l is not None and self.targets_u is not None:
            vl = self.targets_l.visual_targets(ids_l, views_l, dev)
            vu = self.targets_u.visual_targets(ids_u, views_u, dev)
            visual = {name: torch.cat([mix(vl[name], vu[name], mt), mix(vu[name], vl[name], mt)]) for name in vl}
            loss_vis = self._distill(out.layers, visual)
        w_u = self.m.consistency_weight * ramp
        w_d = self.m.distill_weight if self.stage2_visual else 0.0
        loss = loss_sup + w_u * loss_pl + w_d * loss_vis
        return {
            "loss": loss,
            "stage": torch.tensor(2.0),
            "loss_sup": loss_sup.detach(),
            "loss_pseudo": loss_pl.detach(),
            "loss_visual": loss_vis.detach(),
            "w_pseudo": torch.tensor(w_u),
            "w_distill": torch.tensor(w_d),
            "threshold": torch.tensor(threshold),
            "pseudo_supervised": conf_u.float().mean().detach(),
            **{k2: torch.tensor(v) for k2, v in stats.items()},
        }
