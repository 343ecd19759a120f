"""Each image's search vector: the sentence embedding of the caption it shows (search by meaning).

The worker embeds the model's best caption when it stores it (captions.queue.store_captions); this
module covers the rest: a person's caption replaces what the image shows, and `manage.py
embed_captions` fills in images stored without a vector (or with a stale one). The embedding runs
in numpy (ml.text_embedding): no TensorFlow in the web process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from captions.models import Caption, Image
from captions.selectors import active_model_version, choose_captions, slim_images

logger = logging.getLogger(__name__)


def embed_shown_captions(image_ids: Iterable[int], *, force: bool = False) -> int:
    """Point each image's search vector at the caption it shows, embedding that caption, unless it
    already does (`force`: embed again anyway). Returns how many images were updated."""
    from ml.text_embedding import shared_embedder

    ids = list(image_ids)
    if not ids:
        return 0
    images = slim_images("embedded_caption")
    active = active_model_version()
    stale: list[tuple[Image, Caption]] = []
    for image in images.filter(pk__in=ids):
        shown = choose_captions(image, active).best
        if shown is not None and (force or image.embedded_caption_id != shown.pk):
            stale.append((image, shown))
    if not stale:
        return 0
    vectors = shared_embedder().embed([caption.text for _, caption in stale])
    for (image, caption), vector in zip(stale, vectors, strict=True):
        image.caption_embedding, image.embedded_caption_id = vector, caption.pk
    Image.objects.bulk_update([image for image, _ in stale], ["caption_embedding", "embedded_caption"])
    return len(stale)


def follow_shown_captions(image_ids: Iterable[int], chunk: int = 500) -> None:
    """After people's captions changed what images show: their vectors follow. A failure (the
    embedding model missing) is logged, not raised: the captions are saved, `embed_captions` catches up."""
    ids = list(image_ids)
    for start in range(0, len(ids), chunk):
        try:
            embed_shown_captions(ids[start : start + chunk])
        except Exception:
            logger.exception("imgcap: embedding the shown captions of %d images failed", len(ids))
            return
