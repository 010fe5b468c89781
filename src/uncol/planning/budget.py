"""This machine's compute budget, as ``uncol init`` sizes patches and batches for it.

Two numbers drive the plan, as GPU memory drives nnU-Net's (Isensee et al., Nat Methods 2021):
the input voxels of one labeled batch, and the largest 3D patch. On a CPU they are set by time, not
memory: the shipped configs, which fit a 1-hour CPU budget, train 8 x 256 x 256 (ACDC 2D) and
2-4 x 48 x 64 x 48 (Hippocampus 3D) voxels per step, about 2^19. On a GPU with 10 GB or more,
nnU-Net's typical plans (3D patches around 128^3, batch 2) set them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

CPU_STEP_VOXELS = 2**19
CPU_PATCH_VOXELS_3D = 2**18  # 64^3
GPU_STEP_VOXELS = 2**22
GPU_PATCH_VOXELS_3D = 2**21  # 128^3
SMALL_GPU_GIB = 10.0


@dataclass(frozen=True)
class MachineBudget:
    """What one training step may cost on this machine.

    Attributes:
        device: ``cpu`` or ``cuda`` (what ``train.device=auto`` picks here).
        cpu_threads: CPU cores available to this process.
        gpu_memory_gib: memory of the first GPU (0 without one).
        step_voxels: input voxels of one labeled batch (batch size x patch voxels).
        patch_voxels_3d: the largest 3D patch.
    """

    device: str
    cpu_threads: int
    gpu_memory_gib: float
    step_voxels: int
    patch_voxels_3d: int

    def where(self) -> str:
        """The device in words, e.g. ``CPU, 2 threads``."""
        if self.device == "cuda":
            return f"GPU with {self.gpu_memory_gib:.0f} GiB"
        return f"CPU, {self.cpu_threads} thread{'s' if self.cpu_threads != 1 else ''}"

    def describe(self) -> str:
        """One line for the config header and the ``uncol init`` output."""
        return f"{self.where()}: up to {self.step_voxels:,} input voxels per step, 3D patches up to {self.patch_voxels_3d:,} voxels"


def cpu_budget(threads: int | None = None) -> MachineBudget:
    """The CPU budget (also what tests use, so that plans do not depend on the machine)."""
    n = threads if threads is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return MachineBudget("cpu", int(n or 1), 0.0, CPU_STEP_VOXELS, CPU_PATCH_VOXELS_3D)


def detect_budget() -> MachineBudget:
    """The budget of this machine: its first CUDA GPU when there is one, else its CPU."""
    cpu = cpu_budget()
    if not torch.cuda.is_available():
        return cpu
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    # Below ~10 GB, nnU-Net's default plans no longer fit: quarter the voxels, as its planner shrinks patches.
    scale = 1 if gib >= SMALL_GPU_GIB else 4
    return MachineBudget("cuda", cpu.cpu_threads, gib, GPU_STEP_VOXELS // scale, GPU_PATCH_VOXELS_3D // scale)
