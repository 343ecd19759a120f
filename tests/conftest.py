"""Shared fixtures: the real data in ../shared/data and one tiny model trained on real photos."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FLICKR8K = DATA / "flickr8k"
COCO_MINI = DATA / "coco-mini"

# Small enough to train in ~20 s on two cores, big enough to learn real captions by heart.
TINY = dict(
    dataset="flickr8k",
    root=str(FLICKR8K),
    encoder="efficientnet_lite0",
    image_size=96,
    limit_images=8,
    captions_per_image=1,
    eval_every=0,
    batch_size=8,
    embed_dim=64,
    units=128,
    feature_proj_dim=64,
    attention_dim=64,
    dropout=0.0,
    learning_rate=0.003,
    warmup_steps=0,
    max_len=25,
    beam_size=3,
    seed=7,
)


def needs_flickr8k() -> None:
    if not (FLICKR8K / "Flickr8k.token.txt").is_file():
        pytest.skip(f"real Flickr8k data not found at {FLICKR8K}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory (= model directory) trained 150 steps on 8 Flickr8k train images."""
    needs_flickr8k()
    from ml.config import TrainConfig
    from ml.train import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(TrainConfig(**TINY, epochs=150), out, progress=False)
    return out


IMG2DATASET_FIXTURE = REPO / "tests" / "fixtures" / "img2dataset"


@pytest.fixture(scope="session")
def tiny_broad_run(tmp_path_factory) -> Path:
    """Like tiny_run, plus the img2dataset fixture as a second source with its own style token,
    and the encoder's ImageNet concepts as decoder input (the shipped model's set-up)."""
    needs_flickr8k()
    from ml.config import TrainConfig
    from ml.train import train

    out = tmp_path_factory.mktemp("tiny-broad") / "run"
    extra = [{"dataset": "img2dataset", "root": str(IMG2DATASET_FIXTURE), "style": "cc"}]
    # 8 + 5 captions: one batch of all of them a step, as tiny_run has.
    cfg = TrainConfig(**{**TINY, "batch_size": 13}, epochs=150, styles=True, concepts=True, extra=extra)
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_captioner(tiny_run):
    from ml.captioner import load_captioner

    return load_captioner(tiny_run)


@pytest.fixture(scope="session")
def tiny_references(tiny_run) -> dict[str, str]:
    """image path -> the one caption each training image was taught."""
    from ml.data import load_dataset

    refs = load_dataset("flickr8k", FLICKR8K, split="train").captions_by_image()
    return {path: refs[path][0] for path in list(refs)[:8]}


def real_photo(folder: Path, index: int = 0) -> Path:
    found = sorted(folder.glob("*.jpg"))
    if len(found) <= index:
        pytest.skip(f"real photos not found in {folder}")
    return found[index]


@pytest.fixture(scope="session")
def make_heic() -> Callable[..., bytes]:
    """make_heic(source=None, exif=None) -> HEIC bytes encoded by pillow-heif (as an iPhone's are, HEVC
    in a `heic`-branded file) from a real photo: by default the first COCO photo (640x426, not square);
    `exif` (bytes) goes into the file's Exif item. Made once per argument set and session."""
    from PIL import Image

    from ml.images import register_heif

    register_heif()

    @functools.cache
    def make(source: Path | None = None, exif: bytes | None = None) -> bytes:
        with Image.open(source or real_photo(COCO_MINI / "val2017")) as picture:
            out = io.BytesIO()
            # x265's fastest preset: a second less per photo on a busy machine, the same kind of file.
            extra = {"exif": exif} if exif else {}
            picture.convert("RGB").save(out, "HEIF", quality=70, enc_params={"preset": "ultrafast"}, **extra)
        return out.getvalue()

    return make


@pytest.fixture(scope="session")
def jpeg_48mp(tmp_path_factory) -> Path:
    """A 48-megapixel (8000x6000) JPEG, as a phone's main camera takes, made once a session by enlarging
    the first COCO photo (nearest neighbour, quality 70: about a second, 2 MB; 200 MB while it is made)."""
    from PIL import Image

    path = tmp_path_factory.mktemp("big") / "48mp.jpg"
    with Image.open(real_photo(COCO_MINI / "val2017")) as picture:
        picture.convert("RGB").resize((8000, 6000), Image.Resampling.NEAREST).save(path, quality=70)
    return path


@pytest.fixture
def meteor_starts(monkeypatch) -> list:
    """The METEOR JVMs (ml.metrics._Meteor) started during the test, in order: each costs 10-20 s."""
    from ml import metrics

    started = []

    class CountedMeteor(metrics._Meteor):
        def __init__(self, timeout: float) -> None:
            super().__init__(timeout)
            started.append(self)

    monkeypatch.setattr(metrics, "_Meteor", CountedMeteor)
    return started


def read_log(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as fp:
        return list(csv.DictReader(fp))


def run_ml(
    *args: str, env: dict[str, str] | None = None, own_process: bool = False
) -> subprocess.CompletedProcess:
    """`python -m ml ARGS` from the repository root: its exit code, stdout and stderr.

    By default `ml.cli.main` runs in this process (what `python -m ml` runs once the interpreter is
    up), so each call does not pay a second TensorFlow import (~10 s here); `own_process` runs the
    real command line in a subprocess, as a user types it.
    """
    if own_process:
        return subprocess.run(
            [sys.executable, "-m", "ml", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **(env or {})},
        )
    from ml.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.chdir(REPO), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - what the interpreter would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["python", "-m", "ml", *args], code, out.getvalue(), err.getvalue())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `make test-fast` deselects these: every database test, and every test that starts the platform.
    for item in items:
        if item.get_closest_marker("django_db") or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.services)
