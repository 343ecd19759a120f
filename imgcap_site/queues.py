"""Celery task and queue names: the contract between settings (routes, beat), the web side that
sends work (captions/queue.py) and the workers that take it (worker/tasks.py). Defined once here;
this module imports nothing, so settings can read it."""

CAPTION_TASK = "imgcap.caption_images"  # caption pending images, these ids first
REAPER_TASK = "imgcap.requeue_stale"  # the reaper: re-send lost work, give up on hopeless images
FETCH_TASK = "imgcap.fetch_urls"  # download a batch's URLs into it
CAPTION_QUEUE = "caption"  # what captioning workers (the ones with the model) consume
FETCH_QUEUE = "fetch"  # URL downloads: waiting on other servers, no model (workers of their own)
DEFAULT_QUEUE = "default"  # everything else, e.g. the reaper
