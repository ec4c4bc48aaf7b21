import json

import pytest

from launch.cli import main
from launch.results import replace_block


def test_demo_runs_end_to_end(tmp_path, capsys):
    js = tmp_path / "demo.json"
    assert main(["demo", "--out", str(tmp_path / "demo"), "--episodes", "2", "--no-progress",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "[1/2] collected: 2 Lift episodes" in out and "[2/2] dataset" in out
    report = json.loads(js.read_text())
    assert report["episodes"] == 2 and report["windows"] > 0


def test_replace_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- results:x:begin -->\nold\n<!-- results:x:end -->\nbottom\n")
    replace_block(readme, "x", "new table")
    assert readme.read_text() == "top\n<!-- results:x:begin -->\nnew table\n<!-- results:x:end -->\nbottom\n"
    with pytest.raises(ValueError, match="markers"):
        replace_block(readme, "y", "z")


def test_bench_checks_readme_before_running(tmp_path, capsys):
    assert main(["bench", "experts", "--update-readme", str(tmp_path / "missing.md")]) == 2
    assert "no README" in capsys.readouterr().err
