"""What a run shows while it goes: a bar redrawn in place on a terminal, one plain line per file when
stderr is a file or a pipe (logs, CI), nothing with --quiet."""

from __future__ import annotations

import shutil
import threading
import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_S = 0.1  # at most ten redraws a second: a fast run must not spend its time drawing


class Progress:
    def __init__(self, stream: TextIO, *, quiet: bool = False, tty: bool | None = None) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty() if tty is None else tty
        self.lock = threading.Lock()  # upload threads report at once
        self.total = self.done = 0
        self.counts = {"uploaded": 0, "already": 0, "failed": 0}
        self.bytes_sent = 0
        self.started = time.monotonic()
        self.phase = ""
        self.drawn_at = 0.0
        self.bar_shown = False

    def start(self, phase: str, total: int) -> None:
        with self.lock:
            self.phase, self.total, self.done = phase, total, 0
            self.started = time.monotonic()
            if not self.tty:
                self._line(f"{phase} {total} file{'s' if total != 1 else ''}...")
            self._draw(force=True)

    def step(self, outcome: str | None = None, name: str = "", detail: str = "", size: int = 0) -> None:
        """One file finished its phase; `outcome` (uploaded, already, failed) counts it."""
        with self.lock:
            self.done += 1
            if outcome is not None:
                self.counts[outcome] += 1
                self.bytes_sent += size if outcome == "uploaded" else 0
                if not self.tty or outcome == "failed":
                    words = {"uploaded": "uploaded", "already": "already on the server", "failed": "failed"}
                    self._line(f"{words[outcome]}: {name}" + (f": {detail}" if detail else ""))
            self._draw(force=self.done == self.total)

    def note(self, text: str) -> None:
        """A line that stays (a retry, a warning), above the bar."""
        with self.lock:
            self._line(text)
            self._draw(force=True)

    def finish(self) -> None:
        with self.lock:
            if self.tty and self.bar_shown and not self.quiet:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            self.bar_shown = False

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty and self.bar_shown:
            self.stream.write("\r\x1b[K")  # clear the bar, print the line, the bar comes back below it
        self.stream.write(text + "\n")
        self.stream.flush()
        self.bar_shown = False

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or not self.tty or (not force and now - self.drawn_at < REDRAW_S):
            return
        self.drawn_at = now
        filled = round(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        text = f"{self.phase} [{bar}] {self.done}/{self.total}"
        if self.phase == "uploading":
            c = self.counts
            rate = self.bytes_sent / max(now - self.started, 1e-6) / 2**20
            text += f"  uploaded {c['uploaded']}, already {c['already']}, failed {c['failed']}"
            text += f"  {rate:.1f} MiB/s"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()
        self.bar_shown = True
