"""What ``uncol init`` prints: the dataset as inspected, and the main planned choices."""

from __future__ import annotations

from collections.abc import Sequence

from uncol.config import Config
from uncol.planning.plan import Plan

#: The planned options ``uncol init`` lists on the terminal (every reason is in the written file).
SHOWN = (
    "model.arch", "model.channels", "train.patch_size", "model.vit_patch", "train.batch_size", "data.normalize",
    "split.labeled",
)


def _fmt(values: Sequence[object]) -> str:
    return "x".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in values)


def _get(cfg: Config, dotted: str) -> object:
    node: object = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def dataset_text(plan: Plan) -> str:
    """The dataset as ``uncol init`` inspected it: layout, masks, cases, sizes, spacing, classes, problems."""
    fp = plan.fingerprint
    if fp is None:
        return ""
    r = fp.report
    cases = ", ".join(f"{role} {c['cases']} ({c['groups']} groups)" for role, c in r.counts.items())
    lines = [f"Dataset {fp.data.root}", f"  layout     {fp.layout_text()}"]
    if fp.mask_modes:
        lines.append(f"  masks      mask_mode auto reads them as {fp.mask_mode_text()}")
    lines.append(f"  cases      {cases}")
    if fp.cases:
        lo = tuple(min(c.shape[a] for c in fp.training_cases()) for a in range(fp.ndim))
        hi = fp.max_shape()
        lines.append(
            f"  images     {fp.ndim}D, {fp.channels()} channel(s); size median {_fmt(fp.median_shape())}, "
            f"from {_fmt(lo)} to {_fmt(hi)}; spacing median {_fmt(fp.median_spacing())}"
        )
    if r.intensity:
        lines.append(f"  intensity  {r.intensity['min']:.4g} to {r.intensity['max']:.4g}")
    names = plan.config.data.class_names
    source = "from dataset.json" if fp.names_known else "placeholders: rename them in the config"
    lines.append(f"  classes    {len(names)}: " + ", ".join(f"{k} {n}" for k, n in enumerate(names)) + f" ({source})")
    if r.ok:
        lines.append("  problems   none")
    else:
        lines.append(f"  problems   {len(r.problems)}:")
        lines += [f"    - {p}" for p in r.problems[:20]]
        if len(r.problems) > 20:
            lines.append(f"    ... and {len(r.problems) - 20} more (uncol data check lists them all)")
    return "\n".join(lines)


def choices_text(plan: Plan) -> str:
    """The main planned options with their reasons."""
    head = f"Planned for this machine ({plan.budget.describe()}):" if plan.budget else "Planned:"
    lines = [head]
    for key in SHOWN:
        if key == "model.vit_patch" and not plan.config.model.arch.startswith("uncol"):
            continue
        value = _get(plan.config, key)
        if isinstance(value, float) and value > 1 and value.is_integer():
            value = int(value)  # a count of patients, read from a float option
        lines.append(f"  {key} = {value}")
        if key in plan.notes:
            lines.append(f"      {plan.notes[key]}")
    return "\n".join(lines)
