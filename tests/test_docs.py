"""The docs cannot rot: the site builds strictly, the CLI reference matches the parsers, every
Python block of a guide or recipe runs, every ``dpctrl`` command line in them parses, results
blocks sit on the pages the commands write, and nothing points outside the repository."""
from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# pages whose text is a record of runs (commands with their historical flags), not instructions
RECORDS = ("results", "notes")


def guide_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] not in RECORDS and p.name != "cli.md")


def blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(), re.S | re.M)


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    # `python -m mkdocs`: the `mkdocs` script's folder also holds the `dpctrl` console script, which
    # the API pages' loader would otherwise take for the package
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "policy" / "index.html").read_text()
    assert "ChunkPolicy" in api and "predict_batch" in api  # docstrings rendered, not empty stubs
    assert (tmp_path / "site" / "extending" / "sampler" / "index.html").exists()


def test_cli_reference_is_up_to_date():
    from dpctrl.launch.reference import markdown
    assert (DOCS / "cli.md").read_text() == markdown(), \
        "docs/cli.md is out of date: python -m dpctrl.launch.reference --write docs/cli.md"


def test_cli_reference_check_command(tmp_path):
    stale = tmp_path / "cli.md"
    stale.write_text("old\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "dpctrl.launch.reference", *a], capture_output=True,
                                    text=True, cwd=tmp_path)
    assert run("--check", str(stale)).returncode == 1
    assert run("--write", str(stale)).returncode == 0 and run("--check", str(stale)).returncode == 0


RUNNABLE = [p for p in guide_pages() if blocks(p, "python")]
# what each page's script must print: the checks its prose promises
PROMISES = {
    "extending/sampler.md": ["[99, 89, 79, 69, 59, 49, 39, 29, 19, 9]", "ddim-trailing 10 network calls", "(16, 7)"],
    "extending/task.md": ["True\n", "40 episodes", "success"],
    "extending/robot.md": ["True\n", "commands sent", " cycles; 0 policy errors"],
    "extending/policy.md": ["True\n", "eval:", "loop:"],
    "guides/simulation.md": ["1 ['action', 'obs'] (50, 7)"],
}


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(DOCS)) for p in RUNNABLE])
def test_python_blocks_run(page, tmp_path):
    """A page's Python blocks, in order, as one script from an empty directory."""
    script = tmp_path / "page.py"
    script.write_text("\n\n".join(blocks(page, "python")))
    env = {**os.environ, "MUJOCO_GL": "egl", "DPCTRL_HOME": str(tmp_path / "home")}
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=env)
    assert res.returncode == 0, f"{page}:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    for promise in PROMISES.get(str(page.relative_to(DOCS)), []):
        assert promise in res.stdout, f"{page} should print {promise!r}; printed:\n{res.stdout}"


def test_every_extending_page_is_run():
    assert {str(p.relative_to(DOCS)) for p in RUNNABLE} >= set(PROMISES)


def command_lines(text: str) -> list[str]:
    """``dpctrl ...`` lines of bash blocks, continuations joined, comments dropped."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith("dpctrl "):
                out.append(line)
    return out


def concrete(line: str) -> list[str]:
    """One concrete reading of a documented line: optional ``[...]`` parts dropped, the first of
    ``a|b`` alternatives taken."""
    while "[" in line:
        line = re.sub(r"\[[^\[\]]*\]", "", line)
    words = shlex.split(line)[1:]
    return [w.split("|")[0] if "|" in w and not w.startswith("-") else w for w in words]


def test_documented_commands_parse():
    from dpctrl.launch.cli import build_parser
    pages = [*guide_pages(), ROOT / "README.md"]
    lines = [(p, line) for p in pages for line in command_lines(p.read_text())]
    assert len(lines) > 30
    for page, line in lines:
        try:
            build_parser().parse_args(concrete(line))
        except SystemExit as e:
            raise AssertionError(f"{page.relative_to(ROOT)}: `{line}` does not parse") from e


def test_results_blocks_are_on_their_pages():
    from dpctrl.launch.results import RESULT_PAGES
    for block, page in RESULT_PAGES.items():
        text = (DOCS / "results" / page).read_text()
        assert f"<!-- results:{block}:begin -->" in text and f"<!-- results:{block}:end -->" in text, (block, page)


def test_readme_is_short_and_no_command_writes_it():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024
    assert "<!-- results:" not in (ROOT / "README.md").read_text()
    for f in (ROOT / "launch").rglob("*.py"):
        assert "update_readme" not in f.read_text() and "update-readme" not in f.read_text(), f


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    return [ROOT / f for f in out if not f.endswith((".npz", ".safetensors", ".png", ".mp4")) and (ROOT / f).is_file()]


def test_nothing_points_outside_the_repository():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outside = re.compile(r"\.\./shared|REFERENCES\.md|DESIGN\.md|/work/")
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in tracked_text_files() for i, line in
            enumerate(f.read_text(errors="ignore").splitlines(), 1) if outside.search(line)
            and f.name != "test_docs.py"]
    assert not hits, hits


def test_no_docstring_names_an_issue():
    issue = re.compile(r"\bissues? #?\d+\b", re.I)
    hits = []
    for f in [*ROOT.glob("*.py"), *(p for d in ("policy", "envs", "control", "data", "launch", "tests")
                                    for p in (ROOT / d).rglob("*.py"))]:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                if issue.search(doc):
                    hits.append(f"{f.relative_to(ROOT)}: {getattr(node, 'name', 'module')}")
    assert not hits, hits
