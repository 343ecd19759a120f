"""Celery task and queue names: the contract between settings (routes, beat), the web side that
sends work (captions/queue.py) and the workers that take it (worker/tasks.py). Defined once here;
this module imports nothing, so settings can read it."""

CAPTION_TASK = "imgcap.caption_images"  # caption pending images, these ids first
REAPER_TASK = "imgcap.requeue_stale"  # the reaper: re-send lost work, give up on hopeless images
FETCH_TASK = "imgcap.fetch_urls"  # download a batch's URLs into it
DELIVER_TASK = "imgcap.deliver_webhook"  # POST one webhook delivery to its receiver
CAPTION_QUEUE = "caption"  # what captioning workers (the ones with the model) consume
# Work that waits on other servers: URL downloads, webhook deliveries (no model; workers of their own).
FETCH_QUEUE = "fetch"
DEFAULT_QUEUE = "default"  # everything else, e.g. the reaper
