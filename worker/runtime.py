"""The captioner of this worker process, loaded once, and the ModelVersion row it writes under."""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from captions.services.model_versions import ensure_model_version
from worker import monitoring

if TYPE_CHECKING:  # importing ml.captioner imports TensorFlow: only when a caption is needed
    from captions.models import ModelVersion
    from ml.captioner import Captioner

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_captioner: Captioner | None = None


def model_dir() -> Path:
    """The model directory this worker serves: settings.IMGCAP_MODEL_DIR, else the shipped default."""
    from ml.paths import default_model_dir  # no TensorFlow in ml.paths

    configured = getattr(settings, "IMGCAP_MODEL_DIR", None)
    return Path(configured) if configured else default_model_dir()


def get_captioner() -> Captioner:
    """This process's captioner; the first call loads it (seconds), later calls return it."""
    global _captioner
    if _captioner is None:
        with _lock:
            if _captioner is None:
                started = time.monotonic()  # TensorFlow's import is most of the start-up
                from ml.captioner import load_captioner

                directory = model_dir()
                captioner = load_captioner(directory)
                monitoring.MODEL_LOAD_SECONDS.set(time.monotonic() - started)
                logger.info(
                    "imgcap captioner ready: model %s (encoder %s) from %s, loaded in %.1fs",
                    captioner.version,
                    captioner.config["encoder"]["name"],
                    directory,
                    time.monotonic() - started,
                )
                _captioner = captioner
    return _captioner


def lower_priority() -> None:
    """Make this captioning process nicer by settings.IMGCAP_WORKER_NICE (once), so the model takes
    the CPU the web server leaves rather than the other way round."""
    step = settings.IMGCAP_WORKER_NICE
    if step > 0 and os.nice(0) < step:
        os.nice(step - os.nice(0))


def embed_captions(texts: list[str]) -> Any:
    """Sentence embeddings of captions, float32 [N, 384] (search by meaning), or None when the
    text-embedding model cannot be used here: captions are stored without, and `embed_captions`
    (the management command) fills them in later."""
    if not texts:
        return None
    try:
        from ml.text_embedding import shared_embedder

        return shared_embedder().embed(texts)
    except Exception:
        logger.exception("imgcap: embedding %d captions failed; stored without embeddings", len(texts))
        return None


def warm_up() -> None:
    """Load the model at worker start so the first batch doesn't wait; a failure is logged, not fatal.

    Tasks call get_captioner() again and raise before claiming anything, so images stay pending
    (the reaper re-sends them) rather than being marked failed for a deployment problem.
    """
    try:
        get_captioner()
    except Exception:
        logger.exception("imgcap captioner could not be loaded from %s", model_dir())
    embed_captions(["a warm-up sentence"])  # loads the text-embedding model too


@functools.cache
def _model_metrics(directory: Path) -> dict[str, Any]:
    # A model directory's files do not change under a running worker (a new model is a new directory
    # or a restart), so its metrics are read once, not once per micro-batch.
    return read_metrics(directory)


def read_metrics(directory: Path) -> dict[str, Any]:
    """The model directory's metrics.json, or {} when it has none (or it is unreadable)."""
    try:
        return json.loads((directory / "metrics.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s: %s", directory / "metrics.json", exc)
        return {}


def register_model_version(captioner: Captioner, directory: Path | None = None) -> ModelVersion:
    """The ModelVersion row for `captioner` (created, and made active if none is, on first use).

    Looked up per batch rather than cached: a row cached in the process would go stale if the
    version were deleted, and the lookup is one indexed query per batch.
    """
    return ensure_model_version(
        name=captioner.version,
        encoder=captioner.config["encoder"]["name"],
        metrics=_model_metrics(directory if directory is not None else model_dir()),
    )
