"""Training curves as TensorBoard event files (``<out>/tb``), written by the trainer's rank 0.

Every logged event becomes scalars named ``<event>/<field>``: ``train/loss``, ``train/lr``,
``train/grad_norm``, ``train/samples_per_s`` every ``log_every`` steps, and the EMA policy's
``eval/success_rate`` (and ``eval/mean_max_reward``) at each evaluation. A run resumed at
step k purges the events after k (``purge_step=k + 1``: an interrupted run may have logged past
its last saved state), so the curves of a resumed run equal an uninterrupted one. ``log.jsonl``
holds the same records; the curves need the ``viz`` extra (``pip install 'dpctrl[viz]'``).
"""
from __future__ import annotations

import logging
import numbers
from pathlib import Path

log = logging.getLogger(__name__)
VIZ_EXTRA = "pip install 'dpctrl[viz]'"


class Curves:
    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        self.log_dir = Path(log_dir)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # said once, on stderr; log.jsonl still has every number
            log.warning("no TensorBoard curves for this run (tensorboard is not installed: %s); "
                        "log.jsonl has the same numbers", VIZ_EXTRA)
            self.writer = None
            return
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)

    def add(self, record: dict) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key not in ("event", "step") and isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(f"{record['event']}/{key}", float(value), record["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_curves(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in ``log_dir``'s event files, ``{tag: [(step, value), ...]}``
    sorted by step (TensorBoard's own event reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def plot_curves(log_dir: str | Path, out_png: str | Path, title: str = "") -> dict:
    """The curves of ``log_dir`` read back (``read_curves``) as one picture: loss, learning rate,
    gradient norm, and EMA eval success where there is one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = read_curves(log_dir)
    if "train/loss" not in curves:
        raise ValueError(f"{log_dir} has no training curves (train/loss)")
    panels = [t for t in ("train/loss", "train/lr", "train/grad_norm", "eval/success_rate") if t in curves]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 2.8), squeeze=False)
    for ax, tag in zip(axes[0], panels):
        steps, values = zip(*curves[tag])
        ax.plot(steps, values, "o-" if tag.startswith("eval") else "-", ms=3, lw=1.2)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step")
        if tag == "train/loss":
            ax.set_yscale("log")
        if tag == "eval/success_rate":
            ax.set_ylim(-0.03, 1.03)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return {tag: len(v) for tag, v in curves.items()}
