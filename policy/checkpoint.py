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


def read_config(path: str | os.PathLike, fmt: str, version: int) -> dict:
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


def read_format(path: str | os.PathLike) -> str | None:
    """The ``format`` a checkpoint directory's config.json names (None if it cannot be read;
    ``read_config`` then says what is wrong)."""
    try:
        return json.loads((Path(path) / CONFIG).read_text()).get("format")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def read_sidecar(name_or_dir: str | os.PathLike, file: str) -> dict | None:
    """A JSON file saved next to a checkpoint's weights (``recipe.json``, the calibrations ``rti.json``
    and ``cache_bac.json``), or None if there is none."""
    path = resolve(name_or_dir) / file
    return json.loads(path.read_text()) if path.exists() else None


def write_sidecar(name_or_dir: str | os.PathLike, file: str, payload: dict) -> Path:
    """Write a JSON file next to a checkpoint's weights (refused inside an installed package)."""
    out = writable(resolve(name_or_dir) / file)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


class ConfigCheckpoint:
    """``save(dir)`` / ``load(dir)`` for models built as ``cls(cfg, seed=...)`` from one config
    dataclass (every model; policy/registry.py maps each format to its class): the subclass sets ``FORMAT``, ``VERSION``, ``SECTION`` (the
    config's key in config.json) and ``CONFIG`` (the dataclass). A loaded model keeps the
    whole config.json as ``checkpoint_config``."""

    FORMAT: str
    VERSION: int
    SECTION: str
    CONFIG: type

    def save(self, path: str | os.PathLike, extra: dict | None = None, **kw) -> Path:
        """Weights and config, atomically; ``kw`` goes to ``checkpoint_tensors``."""
        from dataclasses import asdict
        config = {"format": self.FORMAT, "version": self.VERSION, self.SECTION: asdict(self.cfg), **(extra or {})}
        return write_dir(path, self.checkpoint_tensors(**kw), config)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """What goes into the weights file (default: the state dict)."""
        return dict(self.state_dict())

    @classmethod
    def from_checkpoint(cls, cfg, tensors: dict[str, torch.Tensor], seed: int = 0):
        """A model from its config and weights file; returns (model, its state to load)."""
        return cls(cfg, seed=seed), tensors

    @classmethod
    def load(cls, path: str | os.PathLike, seed: int = 0):
        path = resolve(path)
        config = read_config(path, cls.FORMAT, cls.VERSION)
        try:
            cfg = cls.CONFIG(**config[cls.SECTION])
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: bad {cls.SECTION} config: {e}") from None
        model, state = cls.from_checkpoint(cfg, read_tensors(path), seed=seed)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: weights do not match the config "
                                  f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.checkpoint_config = config
        return model.eval()
