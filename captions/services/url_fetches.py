"""A batch's URLs, downloaded by a fetch worker (the "fetch" queue) after the batch was answered, so a
slow or silent server holds a fetch worker for at most IMGCAP_URL_BATCH_DEADLINE_S and never a web
worker.

The batch row is the record: `urls_waiting` lists what is still to fetch, and each URL leaves it, in
the same transaction, as it becomes an item (stored through intake like every image) or an entry of
`rejected`; items appear one by one while the others download. A task claims the batch (its task id
and the time) so two deliveries of one message do not fetch twice; a claim older than the deadline is
a dead worker's and the next task takes it over. The reaper sends the task again for batches whose
message was lost, and a URL that was being fetched when IMGCAP_MAX_ATTEMPTS workers died is given up.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from captions.ingest import RejectedInput, fetch_url
from captions.models import Batch
from captions.queue import enqueue_url_fetch
from captions.services.intake import IncomingFile, Rejection, add_fetched

logger = logging.getLogger(__name__)

FETCH_THREADS = 8
# A claim outlives the deadline by this much before another task may take it over: the fetches have
# stopped by then, and storing the last ones takes well under this.
CLAIM_GRACE_S = 15


@dataclass
class FetchReport:
    """What one fetch task did (its return value and log line)."""

    batch: int
    fetched: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    skipped: str = ""  # why nothing was done: "no URLs waiting" / "claimed by another task"


def fetch_waiting_urls(batch_id: int, *, claim: str) -> FetchReport:
    """Download the batch's waiting URLs (8 at a time, one deadline for all) and settle each.

    `claim` names this task (its Celery id: a retry after a database outage keeps its claim). A
    database error is raised for the task to retry; what was settled stays settled.
    """
    report = FetchReport(batch=batch_id)
    claimed = _claim(batch_id, claim)
    if isinstance(claimed, str):
        report.skipped = claimed
        return report
    batch, entries = claimed
    deadline = time.monotonic() + settings.IMGCAP_URL_BATCH_DEADLINE_S
    if entries:
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(entries))) as pool:
            futures = {pool.submit(_download, entry["url"], deadline): entry for entry in entries}
            for future in as_completed(futures):
                entry = futures[future]
                rejection = _settle(batch, entry, future.result(), claim)
                (report.rejected if rejection else report.fetched).append(entry["url"])
    _release(batch_id, claim)
    return report


def resend_lost_fetches(*, after_s: float, limit: int = 100) -> list[int]:
    """Send the fetch task again for batches with URLs waiting whose task was sent over `after_s` ago and
    is not working on them (its message lost with a broker restart), or whose claim has expired (its
    worker died). Sending twice is harmless: the second task finds the batch claimed. Returns their ids."""
    now = timezone.now()
    expired = now - timedelta(seconds=settings.IMGCAP_URL_BATCH_DEADLINE_S + CLAIM_GRACE_S)
    lost = Q(urls_claimed_by="", urls_sent_at__lt=now - timedelta(seconds=after_s)) | Q(
        urls_claimed_at__lt=expired
    )
    with transaction.atomic():
        ids = list(
            Batch.objects.select_for_update(skip_locked=True)
            .exclude(urls_waiting=[])
            .filter(lost)
            .order_by("urls_sent_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        Batch.objects.filter(id__in=ids).update(urls_sent_at=now)
        for batch_id in ids:
            enqueue_url_fetch(batch_id)
    return ids


def _claim(batch_id: int, claim: str) -> tuple[Batch, list[dict]] | str:
    """The batch and the entries this task is to fetch, or why there are none. A fresh claim counts an
    attempt on each entry; entries a dead worker's claims already tried IMGCAP_MAX_ATTEMPTS times are
    rejected instead (a URL that kills its worker must not kill them all)."""
    now = timezone.now()
    expired = now - timedelta(seconds=settings.IMGCAP_URL_BATCH_DEADLINE_S + CLAIM_GRACE_S)
    with transaction.atomic():
        batch = Batch.objects.select_for_update().select_related("owner").filter(pk=batch_id).first()
        if batch is None or not batch.urls_waiting:
            return "no URLs waiting"
        mine = batch.urls_claimed_by == claim
        if batch.urls_claimed_by and not mine and batch.urls_claimed_at > expired:
            return "claimed by another task"
        entries = batch.urls_waiting
        if not mine:
            entries = [{**entry, "attempts": entry.get("attempts", 0) + 1} for entry in entries]
        limit = settings.IMGCAP_MAX_ATTEMPTS
        hopeless = [entry for entry in entries if entry["attempts"] > limit]
        batch.rejected = [
            *batch.rejected,
            *(
                Rejection(
                    entry["url"],
                    "url_gave_up",
                    f"{entry['url']}: not fetched, a worker stopped while fetching it {limit} times",
                ).as_dict()
                for entry in hopeless
            ),
        ]
        entries = [entry for entry in entries if entry["attempts"] <= limit]
        batch.urls_waiting = entries
        batch.urls_claimed_by, batch.urls_claimed_at = (claim, now) if entries else ("", None)
        batch.save(update_fields=["rejected", "urls_waiting", "urls_claimed_by", "urls_claimed_at"])
    return batch, entries


def _download(url: str, deadline: float) -> IncomingFile | Rejection:
    left = deadline - time.monotonic()
    if left <= 0:
        message = (
            f"{url}: not fetched, the batch's URLs took over {settings.IMGCAP_URL_BATCH_DEADLINE_S:g} "
            "seconds in all; send it again (the images already fetched are kept) or in smaller batches"
        )
        return Rejection(url, "url_batch_deadline", message)
    try:
        got = fetch_url(
            url,
            timeout=min(settings.IMGCAP_URL_TIMEOUT_S, left),
            max_bytes=settings.IMGCAP_MAX_UPLOAD_BYTES,
            max_redirects=settings.IMGCAP_URL_MAX_REDIRECTS,
            allow_private=settings.IMGCAP_URL_ALLOW_PRIVATE,
        )
    except RejectedInput as exc:
        return Rejection.of(url, exc)
    return IncomingFile(name=got.name or url, data=got.data)


def _settle(batch: Batch, entry: dict, outcome: IncomingFile | Rejection, claim: str) -> Rejection | None:
    """Store a downloaded URL as the batch's item (or list why not) and take it off the waiting list,
    in one transaction. Returns the rejection, if any."""
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        locked.owner = batch.owner  # loaded with the claim
        if locked.urls_claimed_by != claim:
            return None  # taken over (this task outlived its claim): the new claim settles it
        rejection = outcome if isinstance(outcome, Rejection) else None
        if isinstance(outcome, IncomingFile):
            try:
                add_fetched(
                    batch=locked,
                    file=outcome,
                    position=entry["position"],
                    visibility=entry["visibility"],
                    album_id=entry.get("album"),
                )
            except RejectedInput as exc:
                rejection = Rejection.of(entry["url"], exc)
        locked.urls_waiting = [e for e in locked.urls_waiting if e["position"] != entry["position"]]
        if rejection is not None:
            locked.rejected = [*locked.rejected, rejection.as_dict()]
        locked.save(update_fields=["urls_waiting", "rejected"])
    return rejection


def _release(batch_id: int, claim: str) -> None:
    Batch.objects.filter(pk=batch_id, urls_claimed_by=claim).update(urls_claimed_by="", urls_claimed_at=None)
