"""Checkpoints: a directory with ``model.safetensors`` + ``config.json``, nothing else.

``save`` writes into a temporary sibling directory and renames it into place, so a crash
never leaves a half-written checkpoint under the final name. ``load`` refuses anything that
is not such a directory (never unpickles): a pickle file named like a checkpoint, a
truncated or corrupt safetensors file, or a config of another format all raise
``CheckpointError`` with the reason.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
from dpctrl.policy.normalizer import Normalizer

FORMAT = "dpctrl-policy"
VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
log = logging.getLogger(__name__)
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, torch's zip-of-pickles


SHIPPED_DIR = Path(__file__).parent / "checkpoints"  # read-only: inside the installed package


class CheckpointError(ValueError):
    pass


def user_dir() -> Path:
    """Where named checkpoints a user ships live: ``$DPCTRL_HOME/checkpoints``; ``DPCTRL_HOME``
    defaults to ``$XDG_DATA_HOME/dpctrl`` (``~/.local/share/dpctrl``)."""
    home = os.environ.get("DPCTRL_HOME")
    if not home:
        home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "dpctrl"
    return Path(home).expanduser() / "checkpoints"


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).exists()) if root.is_dir() else []


def shipped() -> list[str]:
    """Names of the checkpoints that ship with the package (policy/checkpoints/<name>/)."""
    return _names(SHIPPED_DIR)


def list_checkpoints() -> dict[str, list[str]]:
    """The named checkpoints: ``{"shipped": [...], "user": [...]}`` (user ones under ``user_dir()``)."""
    return {"shipped": shipped(), "user": _names(user_dir())}


def resolve(name_or_dir: str | os.PathLike) -> Path:
    """A checkpoint directory, or a name: a user checkpoint (``user_dir()/<name>``) first, then a
    shipped one (e.g. ``lift``). A name in neither raises CheckpointError listing both sets."""
    path = Path(name_or_dir)
    if path.exists():
        return path
    for root in (user_dir(), SHIPPED_DIR):
        if (root / str(name_or_dir) / CONFIG).exists():
            return root / str(name_or_dir)
    have = list_checkpoints()
    raise CheckpointError(f"no checkpoint {str(name_or_dir)!r}: not a path; shipped ones are {have['shipped']}, "
                          f"user ones (in {user_dir()}) are {have['user']}")


def load_policy(name_or_dir: str | os.PathLike, seed: int = 0):
    """A chunk policy from a checkpoint of any chunk-policy format (the transformer diffusion
    policy, or PAD), in eval mode; ``seed`` seeds its noise."""
    path = resolve(name_or_dir)
    try:
        fmt = json.loads((path / CONFIG).read_text()).get("format")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        fmt = None  # read_config below says what is wrong
    if fmt == "dpctrl-pad":
        from dpctrl.policy.pad import PadPolicy
        return PadPolicy.load(path, seed=seed)
    return load(path, seed=seed)


def ship_target(name: str, to: str | os.PathLike | None = None) -> Path:
    """Where ``dpctrl ship`` writes checkpoint ``name``: ``to/<name>`` or ``user_dir()/<name>``.
    Refuses anything inside an installed package directory (site-packages), which an install
    owns and a reinstall replaces."""
    if not name or "/" in name or name.startswith("."):
        raise CheckpointError(f"a checkpoint name is one plain word (got {name!r})")
    return writable((Path(to).expanduser() if to is not None else user_dir()).resolve() / name)


def writable(path: str | os.PathLike) -> Path:
    """``path`` if a checkpoint may be written there; CheckpointError inside an installed package
    (site-packages), which the install owns and a reinstall replaces."""
    path = Path(path).resolve()
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        raise CheckpointError(f"refusing to write {path}: it is inside an installed package (site-packages); "
                              f"copy the checkpoint to $DPCTRL_HOME (now {user_dir().parent}) with `dpctrl ship` "
                              f"or pass a directory of your own")
    return path


def write_atomic_dir(final: Path, write) -> None:
    """Call ``write(tmp_dir)`` then move tmp_dir to ``final`` (replacing it) by renames."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a checkpoint is an ordinary directory
    try:
        write(tmp)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)  # safetensors writes 0600; checkpoints are ordinary files
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save(policy: DiffusionPolicy, path: str | os.PathLike, extra: dict | None = None,
         dtype: torch.dtype = torch.float32) -> Path:
    """Save weights (+ normalizer) and config. ``dtype=torch.float16`` halves the size."""
    if policy.normalizer is None:
        raise CheckpointError("policy has no normalizer; fit one before saving")
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in policy.state_dict().items()}
    tensors.update({f"normalizer.{k}": v.contiguous() for k, v in policy.normalizer.state_dict().items()})
    config = {"format": FORMAT, "version": VERSION, "policy": policy.cfg.to_dict(), **(extra or {})}
    return write_dir(path, tensors, config)


def read_config(path: str | os.PathLike, fmt: str = FORMAT, version: int = VERSION) -> dict:
    """The config of a checkpoint directory of format ``fmt``; CheckpointError otherwise."""
    path = Path(path)
    if not path.is_dir():
        if path.exists() and path.read_bytes()[:4].startswith(PICKLE_MAGIC):
            raise CheckpointError(f"{path} is a pickle file; checkpoints are directories with "
                                  f"{WEIGHTS} + {CONFIG} and pickles are never loaded")
        raise CheckpointError(f"{path} is not a checkpoint directory ({WEIGHTS} + {CONFIG})")
    for name in (WEIGHTS, CONFIG):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is missing {name}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / CONFIG} is not valid JSON: {e}") from None
    if config.get("format") != fmt or config.get("version") != version:
        raise CheckpointError(f"{path / CONFIG}: format {config.get('format')!r} v{config.get('version')}, "
                              f"expected {fmt!r} v{version}")
    return config


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights of a checkpoint directory (never a pickle)."""
    weights = Path(path) / WEIGHTS
    if weights.read_bytes()[:4].startswith(PICKLE_MAGIC):
        raise CheckpointError(f"{weights} holds a pickle, not safetensors; refusing to load it")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is corrupt or truncated: {e}") from None


def write_dir(path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Write weights + config atomically (see ``write_atomic_dir``). Replacing a checkpoint drops
    the files next to its weights (``recipe.json``, calibrations such as ``rti.json`` and
    ``cache_bac.json``: all about the old weights); a warning names them."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path = Path(path)
    dropped = sorted(f.name for f in path.iterdir() if f.name not in (WEIGHTS, CONFIG)) if path.is_dir() else []

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": str(config.get("format"))})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    write_atomic_dir(path, write)
    if dropped:
        log.warning("%s: replaced the checkpoint; %s, made for the old weights, removed (calibrations: rerun "
                    "`dpctrl calibrate`)", path, ", ".join(dropped))
    return path


def load(path: str | os.PathLike, seed: int = 0) -> DiffusionPolicy:
    """Load a policy in eval mode from a directory or a shipped name; weights cast to float32."""
    path = resolve(path)
    config = read_config(path)
    weights = path / WEIGHTS
    tensors = read_tensors(path)
    try:
        cfg = PolicyConfig(**config["policy"])
    except TypeError as e:
        raise CheckpointError(f"{path / CONFIG}: bad policy config: {e}") from None
    norm = {k[len("normalizer."):]: v.float() for k, v in tensors.items() if k.startswith("normalizer.")}
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()
             if not k.startswith("normalizer.")}
    policy = DiffusionPolicy(cfg, Normalizer.from_state_dict(norm), seed=seed)
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights}: weights do not match the config (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    return policy.eval()


class ConfigCheckpoint:
    """``save(dir)`` / ``load(dir)`` for models built as ``cls(cfg, seed=...)`` from one config
    dataclass (the planners): the subclass sets ``FORMAT``, ``VERSION``, ``SECTION`` (the
    config's key in config.json) and ``CONFIG`` (the dataclass). A loaded model keeps the
    whole config.json as ``checkpoint_config``."""

    FORMAT: str
    VERSION: int
    SECTION: str
    CONFIG: type

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        from dataclasses import asdict
        config = {"format": self.FORMAT, "version": self.VERSION, self.SECTION: asdict(self.cfg), **(extra or {})}
        return write_dir(path, dict(self.state_dict()), config)

    @classmethod
    def load(cls, path: str | os.PathLike, seed: int = 0):
        path = resolve(path)
        config = read_config(path, cls.FORMAT, cls.VERSION)
        try:
            cfg = cls.CONFIG(**config[cls.SECTION])
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: bad {cls.SECTION} config: {e}") from None
        model = cls(cfg, seed=seed)
        missing, unexpected = model.load_state_dict(read_tensors(path), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: weights do not match the config "
                                  f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.checkpoint_config = config
        return model.eval()
