"""The SQLite search path (FTS5): test_search.py again, in a subprocess whose DATABASE_URL is SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts real processes

REPO = Path(__file__).resolve().parents[2]


def test_search_tests_pass_on_sqlite(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'search.sqlite3'}",
        "IMGCAP_MEDIA_ROOT": str(tmp_path / "media"),
        "IMGCAP_EXPECT_DB_VENDOR": "sqlite",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/web/test_search.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
    assert "skipped" not in result.stdout
