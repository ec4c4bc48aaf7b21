"""Named checkpoints: shipped (read-only, in the package) and the user's ($DPCTRL_HOME)."""
import pytest

from dpctrl.policy import registry
from dpctrl.policy import checkpoint


def test_user_dir_follows_dpctrl_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("DPCTRL_HOME", str(tmp_path / "h"))
    assert checkpoint.user_dir() == tmp_path / "h" / "checkpoints"
    monkeypatch.delenv("DPCTRL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert checkpoint.user_dir() == tmp_path / "xdg" / "dpctrl" / "checkpoints"


def test_unknown_name_lists_shipped_and_user_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("DPCTRL_HOME", str(tmp_path))
    mine = tmp_path / "checkpoints" / "mine"
    mine.mkdir(parents=True)
    (mine / checkpoint.CONFIG).write_text("{}")
    assert checkpoint.resolve("mine") == mine
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.resolve("no-such")
    assert "'lift'" in str(e.value) and "['mine']" in str(e.value) and str(tmp_path) in str(e.value)


def test_ship_target_refuses_site_packages_and_bad_names(monkeypatch, tmp_path):
    monkeypatch.setenv("DPCTRL_HOME", str(tmp_path))
    assert checkpoint.ship_target("a") == (tmp_path / "checkpoints" / "a").resolve()
    assert checkpoint.ship_target("a", tmp_path / "elsewhere") == (tmp_path / "elsewhere" / "a").resolve()
    with pytest.raises(checkpoint.CheckpointError, match="site-packages"):
        checkpoint.ship_target("a", tmp_path / "lib" / "site-packages" / "dpctrl" / "policy" / "checkpoints")
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(checkpoint.CheckpointError, match="one plain word"):
            checkpoint.ship_target(bad)


def test_load_policy_picks_the_class_from_the_format():
    from dpctrl.policy.diffusion_policy import DiffusionPolicy
    from dpctrl.policy.pad import PadPolicy
    assert isinstance(registry.load_policy("lift"), DiffusionPolicy)
    assert isinstance(registry.load_policy("pad-reach"), PadPolicy)
    with pytest.raises(checkpoint.CheckpointError, match="format 'dpctrl-drive' is not one of"):
        registry.load_policy("drive-fork")  # a planner, not a chunk policy
