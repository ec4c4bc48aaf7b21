"""What every result table shares: the machine line and the markdown table (launch/results.py
and the benchmarks import them from here)."""
from __future__ import annotations

import platform


def machine() -> str:
    import os
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {gpu()}"


def gpu() -> str:
    """The CUDA device torch sees (name, torch version), or "no GPU"."""
    import torch
    if not torch.cuda.is_available():
        return "no GPU"
    return f"GPU {torch.cuda.get_device_name(0)} (torch {torch.__version__})"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; cells are formatted by the caller."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
