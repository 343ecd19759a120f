"""kombu's filesystem transport: the broker of the embedded defaults (no services to install)."""

from __future__ import annotations

from pathlib import Path

# kombu's filesystem transport ignores the host, but a URL without one ("filesystem://") makes kombu
# warn "No hostname was supplied" on every new connection, e.g. each command that queues images.
FILESYSTEM_BROKER_URL = "filesystem://localhost//"


def filesystem_broker(folder: Path) -> dict[str, str]:
    """Transport options for kombu's filesystem broker kept in one folder: messages, processed
    messages and exchange bindings (`control`, which otherwise lands in each process's cwd)."""
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
    }
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return options
