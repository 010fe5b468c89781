"""UnCoL's options: the section ``method.uncol`` of a run configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from uncol.config import option
from uncol.methods.consistency import ThresholdBase


@dataclass
class UnCoLOptions:
    """UnCoL (Lu, Hong and Yang, arXiv:2512.13101): stages, distillation, pseudo-labels, copy-paste."""

    unlabeled_batch_size: int = option(2, "Unlabeled images per stage-2 step (the paper: 2 labeled + 2 unlabeled).")
    ema_decay: float = option(0.99, "Momentum of the EMA (mean-teacher) weights.")
    consistency_weight: float = option(0.5, "Maximum weight of the pseudo-label loss (the paper: 0.5).")
    consistency_rampup: float = option(
        0.4,
        "Fraction of the semi-supervised phase over which the unsupervised weight and the entropy threshold "
        "ramp up (Gaussian exp(-5(1-t)^2)).",
    )
    stage1_fraction: float = option(
        0.5,
        "Fraction of train.iterations spent in stage 1 (labeled pretraining with distillation); the rest "
        "is stage 2 (semi-supervised fine-tuning). 1.0 = stage 1 only (Table 4's distillation rows).",
    )
    distill: Literal["both", "visual", "semantic", "none"] = option(
        "both",
        "Stage 1 dual-path distillation: visual (student layers 1-3 <- teacher encoder layers), semantic "
        "(last student layer <- prompt-fused features), both, or none (Table 4).",
    )
    distill_weight: float = option(1.0, "Maximum weight of the distillation loss (visual + semantic).")
    distill_rampup: float = option(
        0.2, "Fraction of stage 1 over which the distillation weight ramps up (Gaussian); 0 = constant."
    )
    pseudo_labels: Literal["uncertainty", "average", "specialized", "generalized", "none"] = option(
        "uncertainty",
        "Stage 2 pseudo-labels (Table 4): entropy-gated fusion of both teachers ('uncertainty', UAPL), their "
        "plain average, the EMA teacher alone, the foundation teacher alone, or none (stage 2 skipped).",
    )
    threshold_start: float = option(
        0.75, "Entropy threshold at the start of stage 2, as a fraction of the base (method.uncol.threshold_base)."
    )
    threshold_end: float = option(1.0, "Entropy threshold once ramped up, as a fraction of the base.")
    threshold_base: ThresholdBase = option(
        "ln2",
        "Entropy (nats) the threshold fractions multiply: 'ln2' as UA-MT's reference code, which the paper takes "
        "its threshold from (also for multi-class data), or 'lnK', the largest entropy of K classes (admits "
        "nearly every pixel once K > 2).",
    )
    stage2_visual: bool = option(
        True,
        "Stage 2: keep the visual distillation (the paper). False trains stage 2 on the labeled and "
        "pseudo-labelled pixels only (an ablation: see the Hippocampus analysis in benchmarks/RESULTS.md).",
    )
    teacher_min_dice: float = option(
        0.0,
        "Stage 2: class-wise reliability gate of the foundation teacher. Before stage 2 it is prompted from the "
        "labeled images' ground truth, as it is from pseudo-labels later, and its Dice per class measured; it gets no "
        "vote on pixels that either teacher assigns to a class scoring below this value. 0 = off (the paper).",
    )
    copy_paste_mode: Literal["patch", "box"] = option(
        "box",
        "Copy-paste mask (both stages): 'box' pastes one box of copy_paste_box of each side, aligned to the ViT "
        "token grid, as BCP (Bai et al., CVPR 2023; the default: on the demo stage 2 gained 9.2 and 7.1 points of "
        "test Dice over 'patch' on seeds 0 and 1, benchmarks/RESULTS.md); 'patch' replaces copy_paste_ratio of a "
        "grid of copy_paste_patch-pixel patches (the paper's 60% mosaic). Image, label and teacher targets share "
        "the mask.",
    )
    copy_paste_prob: float = option(
        0.5,
        "Stage 1: probability that a labeled image is mixed with a partner; the others are shown unmixed (with "
        "their own labels and teacher targets). Stage 2 always mixes labeled and unlabeled images (BCP). "
        "1.0 = every image mixed (the paper).",
    )
    copy_paste_box: float = option(
        2 / 3, "Side of the copy_paste_mode=box box as a fraction of each image side (BCP: 2/3), rounded to tokens."
    )
    copy_paste_ratio: float = option(0.6, "Fraction of spatial patches replaced by copy-paste mixing (paper: 60%).")
    copy_paste_patch: int = option(
        0, "Copy-paste patch size in pixels/voxels; 0 = model.vit_patch, so patches align with ViT tokens."
    )
    self_context_prob: float = option(
        0.0,
        "Stage 1: probability that an image's adapter attends to the student's own tokens instead of the "
        "teacher's fused features (context dropout). 0 follows the paper; >0 trains the inference-time path too "
        "(see benchmarks/RESULTS.md for the train/inference gap it addresses).",
    )
    stage2_labeled_batch: int = option(
        0,
        "Labeled images per stage-2 step (the first ones of the train.batch_size drawn); 0 = all. The paper "
        "uses 4 labeled images in stage 1 and 2 labeled + 2 unlabeled in stage 2.",
    )
    lazy_unlabeled_targets: bool = option(
        False,
        "Compute the teacher targets of an unlabeled sample when it is first drawn (stage 2) instead of all "
        "before training; results are identical. Useful while `uncol teacher cache` is still filling the cache.",
    )
    adapter_context: Literal["teacher", "self"] = option(
        "self",
        "Keys/values of the knowledge adapter during training: 'self', the student's own last-layer tokens, as at "
        "inference (default: the teacher's knowledge reaches them through the distillation paths and "
        "pseudo-labels), or 'teacher', the paper's: stage 1 the foundation teacher's prompt-fused features from "
        "ground-truth boxes, stage 2 see stage2_labeled_context for labeled images and the EMA teacher's tokens "
        "for unlabeled ones. On the demo, 'teacher' left the prompt-free student of stage 1 at 65.1% mean test "
        "Dice against 78.5% with 'self' over 3 seeds (benchmarks/RESULTS.md).",
    )
    stage2_labeled_context: Literal["foundation", "ema"] = option(
        "foundation",
        "Stage 2 adapter context of labeled images (adapter_context=teacher): the foundation teacher's "
        "prompt-fused features from ground-truth boxes, as in stage 1 (the paper, Sec. 3.5.2), or the EMA "
        "teacher's tokens like unlabeled images (earlier versions). Without a foundation teacher: the EMA's.",
    )
    lr_schedule: Literal["per_stage", "whole_run"] = option(
        "per_stage",
        "How train.schedule spans the stages: restarted at train.lr for each stage (the paper trains each "
        "stage for its own 15k iterations at lr 0.01), or once over the whole run (stage 2 then starts at a "
        "fraction of train.lr: about a third with poly at stage1_fraction=0.5).",
    )
    stage2_box_jitter: bool = option(
        True,
        "Stage 2: box prompts drawn from pseudo-labels get a random outward shift per side of up to "
        "teacher.box_jitter_px (the paper's 20 px at 1024 px), drawn anew each step; False: tight boxes.",
    )
    foundation_refresh: float = option(
        0.0,
        "Stage 2: 0 prompts and decodes the foundation teacher for every drawn unlabeled image at every step "
        "(the paper). r in (0, 1]: stage 2 is cut into windows of r x its steps; the first time an image is "
        "drawn in a window, the EMA teacher as it was at the window's start prompts the foundation teacher on "
        "the un-augmented image, and that decode serves every later draw of the image in the window (mapped "
        "onto each view). One decode per image and window instead of one per draw: the mask decoder is most of "
        "a stage-2 step on a CPU (docs/methods.md).",
    )
