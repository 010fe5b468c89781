"""Foundation-teacher pseudo-labels decoded once per image and window of stage 2 (``method.uncol.foundation_refresh``).

In stage 2 the paper prompts the frozen foundation teacher at every iteration from the EMA teacher's
current pseudo-label of each unlabeled image (Lu et al., arXiv:2512.13101, Sec. 3.4). The image
embedding comes from the cache, but the mask decoder runs for every drawn image and prompted class:
on a CPU it is most of a stage-2 step (benchmarks/RESULTS.md: 54-62% of the step on ACDC and
Hippocampus), and an unlabeled image drawn several times is decoded each time from nearly the same
prompt.

Here stage 2 is cut into windows of ``foundation_refresh`` x its steps. At the first step of a window
the EMA teacher's weights are kept (the *prompting teacher* of the window). The first time an
unlabeled image is drawn in the window, the prompting teacher's pseudo-label of the un-augmented image
gives the prompts (with the step's box jitter, seeded by window and image), the foundation teacher
decodes them, and the decoded probabilities serve every draw of that image in the window, mapped onto
each view by its flips, quarter turns and rotation. The EMA teacher itself, the other half of the
fused pseudo-label, still runs on every view at every step.

A decode is a pure function of (prompting teacher, image, window): a resumed run decodes again exactly
what the interrupted one had decoded, so the prompting teacher is the only state a checkpoint needs
(:meth:`FoundationLabelMemo.state`); the decoded maps are not saved.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from uncol.methods.uncol.targets import Geometry, TeacherTargets


class FoundationLabelMemo:
    """Decoded foundation-teacher probabilities of unlabeled images, reused within a window of stage 2.

    Args:
        targets: the unlabeled stream's teacher targets (the decoder and the samples).
        stage2_start: the first stage-2 step.
        window_steps: steps per window (>= 1).
        seed: ``train.seed`` (prompt jitter of a decode is seeded by seed, window and image).
    """

    def __init__(self, targets: TeacherTargets, stage2_start: int, window_steps: int, seed: int) -> None:
        if window_steps < 1:
            raise ValueError(f"window_steps must be >= 1, got {window_steps}")
        self.targets = targets
        self.stage2_start = int(stage2_start)
        self.window_steps = int(window_steps)
        self.seed = int(seed)
        self.window = -1
        self.prompting: nn.Module | None = None
        self.decoded: dict[int, dict[int, np.ndarray]] = {}

    def window_of(self, step: int) -> int:
        """The window of a stage-2 step."""
        return (int(step) - self.stage2_start) // self.window_steps

    @torch.no_grad()
    def probabilities(
        self, ids: Sequence[int], views: Sequence[Geometry], ema: nn.Module, step: int, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        """The foundation teacher's probabilities ``(B, K, *spatial)`` on drawn views, and how many of the
        ``B`` images were decoded at this call (the others reused their window's decode).

        Args:
            ids: sample indices of the views.
            views: each view's geometry (:data:`uncol.methods.uncol.targets.Geometry`).
            ema: the EMA teacher's network (the UnCoL student) now, kept as the prompting teacher when a
                window starts.
            step: the training step.
            device: where the result goes.
        """
        window = self.window_of(step)
        if window != self.window:
            self._start_window(window, ema)
        fresh = 0
        for i in dict.fromkeys(int(i) for i in ids):
            if i not in self.decoded:
                self.decoded[i] = self._decode(i)
                fresh += 1
        maps = [self.targets.view_probabilities(int(i), self.decoded[int(i)], v) for i, v in zip(ids, views, strict=True)]
        return torch.stack(maps).to(device), fresh

    def _start_window(self, window: int, ema: nn.Module) -> None:
        self.window = window
        self.prompting = copy.deepcopy(ema).eval()
        self.decoded = {}

    def _decode(self, i: int) -> dict[int, np.ndarray]:
        assert self.prompting is not None
        param = next(self.prompting.parameters())
        image = torch.from_numpy(np.ascontiguousarray(self.targets.samples[i].image, dtype=np.float32))
        logits = self.prompting(image[None].to(param.device), return_features=True).logits
        probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        rng = np.random.default_rng([self.seed, self.window, i, 19])
        # float16 both when first used and when reused: a resumed run, which decodes again, sees the same maps.
        return {j: p.astype(np.float16) for j, p in self.targets.decode_sample(i, probs, rng).items()}

    # ---- checkpoint state ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the window and its prompting teacher's weights (nothing before stage 2)."""
        if self.prompting is None:
            return {}
        return {"window": self.window, "prompting": self.prompting.state_dict()}

    def load_state(self, state: dict[str, Any], ema: nn.Module) -> None:
        """Inverse of :meth:`state`; ``ema`` is the network to copy the prompting teacher's structure from."""
        self.decoded = {}
        if not state:
            self.window, self.prompting = -1, None
            return
        self.prompting = copy.deepcopy(ema).eval()
        self.prompting.load_state_dict(state["prompting"])
        self.window = int(state["window"])

