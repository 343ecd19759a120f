"""Celery task and queue names: the contract between settings (routes, beat), the web side that
sends work (captions/queue.py) and the workers that take it (worker/tasks.py). Defined once here;
this module imports nothing, so settings can read it."""

CAPTION_TASK = "imgcap.caption_images"  # caption pending images, these ids first
REAPER_TASK = "imgcap.requeue_stale"  # the reaper: re-send lost work, give up on hopeless images
CAPTION_QUEUE = "caption"  # what captioning workers (the ones with the model) consume
DEFAULT_QUEUE = "default"  # everything else, e.g. the reaper
