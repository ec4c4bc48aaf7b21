"""``dpctrl``: the command line. One module per command group registers its subcommand
(``add_parser``); each command parses, calls the library and prints. Command modules import
their heavy dependencies inside the command, so ``dpctrl --help`` stays fast."""
from __future__ import annotations

import argparse
import os
import sys

from dpctrl.launch import (calibrate, collect, demo, drive, export, lerobot, pad, plan, remote, results, run, sweep,
                           train, view)
from dpctrl.launch import eval as evaluation
from dpctrl.launch.bench import cli as bench

GROUPS = (collect, evaluation, train, results, calibrate, run, bench, sweep, export, view, drive, lerobot, plan, pad,
          remote, demo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpctrl", description="Diffusion policies as fixed-rate robot controllers.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError, ConnectionError, ImportError) as e:
        # an ImportError is the user's to fix only when it names the extra to install
        if os.environ.get("DPCTRL_TRACEBACK") or (isinstance(e, ImportError) and "pip install" not in str(e)):
            raise
        print(f"dpctrl {args.command}: error: {e}  (DPCTRL_TRACEBACK=1 shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
