"""Where ml/ keeps things outside the repository (converted encoder weights, feature caches)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_model_dir() -> Path:
    """`IMGCAP_DEFAULT_MODEL` if set, else the model shipped in the repository."""
    return Path(os.environ.get("IMGCAP_DEFAULT_MODEL") or REPO_ROOT / "models" / "default")


def cache_dir() -> Path:
    """`IMGCAP_CACHE_DIR`, else `$XDG_CACHE_HOME/imgcap`, else `~/.cache/imgcap`; created on demand."""
    root = os.environ.get("IMGCAP_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "imgcap"
    path.mkdir(parents=True, exist_ok=True)
    return path
