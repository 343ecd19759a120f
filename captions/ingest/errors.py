"""The one exception every ingest check raises: a client error with a code, a message and an HTTP status."""

from __future__ import annotations


class RejectedInput(Exception):  # noqa: N818 -- the name is fixed by the platform contract
    """Input the platform refuses: bad, unsafe or too large. Never a server fault.

    `code` is a short machine-readable string (e.g. "archive_too_many_files"), `message` a sentence a
    person can act on, and `status` the HTTP status the API should answer with (400, 413, 415 or 422;
    403 or 429 for a quota). `retry_after` (seconds) is sent as Retry-After when waiting would help.
    """

    def __init__(self, code: str, message: str, *, status: int = 400, retry_after: int | None = None) -> None:
        if not 400 <= status < 500:
            raise ValueError(f"RejectedInput is a client error; status {status} is not 4xx")
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"RejectedInput(code={self.code!r}, status={self.status}, message={self.message!r})"


def label(name: str, fallback: str = "upload") -> str:
    """How a file is named in messages: its name if it has one."""
    return name or fallback


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB": sizes in messages people read."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def human_sizes(size: int, limit: int) -> tuple[str, str]:
    """A size and its limit for "X is over the limit of Y": exact byte counts where rounding would
    print the same number twice (21,000,000 bytes vs 20 MiB both read "20.0 MiB")."""
    shown, allowed = human_bytes(size), human_bytes(limit)
    if shown != allowed:
        return shown, allowed
    return f"{size:,} bytes", f"{limit:,} bytes ({allowed})"
