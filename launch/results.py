"""Regenerate a block of README.md's Results section between marker comments."""
from __future__ import annotations

import platform
from pathlib import Path


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


def _markers(readme: Path, name: str) -> tuple[str, str, str, str]:
    """(head, begin, end, tail) around the named block; raises if the block is missing."""
    begin, end = f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"
    if not readme.exists():
        raise FileNotFoundError(f"no README at {readme}")
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    return head, begin, end, rest.split(end, 1)[1]


def check_block(readme: Path, name: str) -> None:
    _markers(readme, name)


def replace_block(readme: Path, name: str, body: str) -> None:
    head, begin, end, tail = _markers(readme, name)
    tmp = readme.with_suffix(".tmp")
    tmp.write_text(f"{head}{begin}\n{body.rstrip()}\n{end}{tail}")
    tmp.replace(readme)  # never leave a half-written README
