"""The command-line reference page (docs/cli.md), generated from the parsers themselves.

    python -m dpctrl.launch.reference --write docs/cli.md     # regenerate after changing a parser
    python -m dpctrl.launch.reference --check docs/cli.md     # exit 1 if the page is out of date

``tests/test_docs.py`` runs the check, so a flag added without regenerating the page fails CI.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

WIDTH = "100"  # help is wrapped at a fixed width, so the page does not depend on the terminal


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) for the parser and every subcommand below it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def markdown() -> str:
    from dpctrl.launch.cli import build_parser
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parts = ["# Command line reference\n",
                 "Every `dpctrl` command and subcommand with its `--help`, generated from the parsers by "
                 "`python -m dpctrl.launch.reference --write docs/cli.md` (the test suite fails when this page "
                 "is out of date). Guides: [getting started](getting-started.md), [simulation evaluation]"
                 "(guides/simulation.md), [the real robot](guides/real-robot.md).\n"]
        for path, parser in commands(build_parser()):
            title = " ".join(("dpctrl", *path))
            parts.append(f"## `{title}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dpctrl.launch.reference", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="PAGE", help="write the reference page")
    mode.add_argument("--check", metavar="PAGE", help="exit 1 when PAGE differs from the parsers' help")
    args = ap.parse_args(argv)
    text = markdown()
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write}")
        return 0
    page = Path(args.check)
    if not page.exists() or page.read_text() != text:
        print(f"{page} is out of date: run python -m dpctrl.launch.reference --write {page}", file=sys.stderr)
        return 1
    print(f"{page} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
