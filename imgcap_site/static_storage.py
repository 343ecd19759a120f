"""The production static files storage: WhiteNoise's hashed, compressed copies written by collectstatic."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """A file that collectstatic has not written (it was not run, or not since an upgrade) keeps its plain
    name, so the page still renders (unstyled) instead of failing with a 500; the system check
    imgcap.W001 (captions/checks.py) says what to run."""

    manifest_strict = False

    def stored_name(self, name: str) -> str:
        try:
            return super().stored_name(name)
        except ValueError:
            return name
