"""Training curves from ``metrics.jsonl``: the training loss and every held-out metric against the
step, one panel each, saved as a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from .checkpoint import atomic_write


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (files, no display), imported when a figure is drawn:
    importing it took ~0.3 s, an eighth of every ``lstmkit`` command's start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (empty when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(metrics_path: str | Path, out_path: str | Path, title: str = "training") -> Path | None:
    """Draw the training loss and the validation metrics of ``metrics_path`` into ``out_path``;
    returns the path, or ``None`` when there was nothing to plot."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    val_names = sorted({k for r in val for k, v in r.items() if k not in ("step", "epoch", "split") and
                        isinstance(v, int | float)})  # fmt: skip
    panels = (["loss"] if train else []) + val_names
    if not panels:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, name in zip(axes[0], panels, strict=True):
        if name == "loss":
            axis.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", color="C0")
        if any(name in r for r in val):
            points = [(r["step"], r[name]) for r in val if name in r]
            axis.plot(*zip(*points, strict=True), marker="o", label=f"validation {name}", color="C1")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    out_path = Path(out_path)
    temporary = out_path.with_name(f".{out_path.name}.tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    atomic_write(out_path, temporary.read_bytes())
    temporary.unlink()
    return out_path
