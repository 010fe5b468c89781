"""UnCoL: uncertainty-informed collaborative learning (Lu, Hong and Yang, arXiv:2512.13101).

One package: the method and its two stages (:mod:`.method`), its options (:mod:`.options`), the
dual-path distillation (:mod:`.distillation`), the uncertainty-aware pseudo-labels
(:mod:`.pseudo_labels`) and the per-sample teacher targets it trains on (:mod:`.targets`).
"""

from uncol.methods.uncol.method import STAGE2_OPTIONS, UnCoLMethod
from uncol.methods.uncol.options import UnCoLOptions

__all__ = ["STAGE2_OPTIONS", "UnCoLMethod", "UnCoLOptions"]
