"""Webhooks: a user's URLs told when their images are captioned (`caption.done`) or fail
(`caption.failed`), so bulk clients need not poll. Each event is POSTed as JSON signed per the
Standard Webhooks spec (headers webhook-id, webhook-timestamp, webhook-signature: `v1,` and the
base64 HMAC-SHA256 of "id.timestamp.body" with the webhook's `whsec_…` secret; the maintained
`standardwebhooks` package signs it, and receivers verify with the same package).

The WebhookDelivery row is the record. It is created in the transaction that records the event
(captions/queue.py calls images_captioned / images_failed), so no event is announced that did not
happen, none is lost once it did, and its task (imgcap.deliver_webhook, on the fetch queue: it
waits on other servers) is sent once that transaction commits. An attempt claims the row by moving
`next_attempt_at` past its own timeout, so a second message for it finds nothing due; then it POSTs
with the address checks of URL fetching (captions/ingest/urls.py post_json) and records the answer:
2xx delivered; 410 Gone turns the webhook off; anything else, or no answer, is tried again after
IMGCAP_WEBHOOK_RETRY_DELAYS_S (10 s, 1 min, 5 min, 30 min, 2 h, 6 h), then the delivery failed.
A short wait travels as a delayed message; a long one (a Redis message held past its visibility
timeout would be delivered twice, and waiting messages sit in a worker's memory) and any message
lost with a broker restart are sent by the reaper once due (resend_due_deliveries).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook as Signer

from captions.ingest import PostAnswer, RejectedInput, check_url, post_json
from captions.models import Image, ModelVersion, Webhook, WebhookDelivery
from captions.selectors import active_model_version, choose_captions, with_captions
from imgcap_site.queues import DELIVER_TASK

logger = logging.getLogger(__name__)

EVENTS = tuple(Webhook.Event.values)
TEST_EVENT = "webhook.test"  # sent by the test action only; never subscribed to, never retried
SECRET_PREFIX = "whsec_"
# An attempt holds its delivery this much longer than its POST may take: then it is a dead worker's
# and the reaper sends it again.
CLAIM_GRACE_S = 20
# Retries at most this far away are sent as a delayed message at once; later ones by the reaper.
HELD_RETRY_MAX_S = 300
ANSWER_SNIPPET_CHARS = 200


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery task did (its return value and log line)."""

    delivery: int
    status: str = ""  # the delivery's status after this attempt
    skipped: str = ""  # why nothing was sent: "not due", "not pending", "no such delivery"


# --- the webhooks people keep ---------------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64 (the Standard Webhooks form)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def create_webhook(*, owner, url: str, events: Sequence[str] | None = None, active: bool = True) -> Webhook:
    """A new webhook of `owner` for `events` (default: all), its secret made here. The URL is checked
    as URL fetches check it without the network (scheme, no user:pass@, no private or metadata
    address written in it); its host's addresses are checked at each delivery. 409 webhook_exists
    for a URL the owner already has, 403 webhook_quota past IMGCAP_MAX_WEBHOOKS_PER_USER."""
    url = _checked_url(url)
    events = _checked_events(EVENTS if events is None else events)
    limit = settings.IMGCAP_MAX_WEBHOOKS_PER_USER
    with transaction.atomic():
        # One owner's creations queue up on their user row, so two at once cannot both pass the cap.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if limit and Webhook.objects.filter(owner=owner).count() >= limit:
            raise RejectedInput(
                "webhook_quota",
                f"you already have {limit} webhooks, the most one user may keep; delete one first",
                status=403,
            )
        if Webhook.objects.filter(owner=owner, url=url).exists():
            raise _exists(url)
        return Webhook.objects.create(owner=owner, url=url, events=events, active=active, secret=new_secret())


def update_webhook(
    *,
    webhook: Webhook,
    url: str | None = None,
    events: Sequence[str] | None = None,
    active: bool | None = None,
) -> Webhook:
    """Change what was given. Turning a webhook on again clears why the platform turned it off."""
    fields = []
    if url is not None:
        webhook.url = _checked_url(url)
        fields.append("url")
    if events is not None:
        webhook.events = _checked_events(events)
        fields.append("events")
    if active is not None:
        webhook.active = active
        fields.append("active")
        if active:
            webhook.deactivated_reason = ""
            fields.append("deactivated_reason")
    if fields:
        try:
            with transaction.atomic():
                webhook.save(update_fields=fields)
        except IntegrityError:
            raise _exists(webhook.url) from None
    return webhook


def rotate_secret(*, webhook: Webhook) -> Webhook:
    """A new secret at once: deliveries from now on (retries included) are signed with it only, and a
    receiver still checking the old one refuses them, so they are retried until it has the new one."""
    webhook.secret = new_secret()
    webhook.save(update_fields=["secret"])
    return webhook


def delete_webhook(*, webhook: Webhook) -> None:
    webhook.delete()  # its deliveries go with it; a message still on its way finds nothing


def send_test(*, webhook: Webhook) -> WebhookDelivery:
    """POST a `webhook.test` event now (in this request, at most IMGCAP_WEBHOOK_TIMEOUT_S) and return
    its delivery with the outcome; once, never retried, also for a webhook that is off."""
    now = timezone.now()
    payload = _envelope(
        TEST_EVENT,
        now,
        {"webhook": webhook.pk, "url": webhook.url, "message": "a test delivery from imgcap"},
    )
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event=TEST_EVENT,
        payload=payload,
        attempts=1,
        next_attempt_at=_claim_until(now),
        sent_at=now,
    )
    delivery.webhook = webhook
    _attempt(delivery)
    return delivery


# --- events (called inside the transaction that records them: captions/queue.py) ------------------


def images_captioned(image_ids: Sequence[int], *, model_version: ModelVersion) -> int:
    """A `caption.done` delivery for each webhook subscribed to it of each image's owner (the
    captions just stored, in this transaction). Returns how many; one query when nobody listens."""
    hooks = _listening(Webhook.Event.CAPTION_DONE, image_ids)
    if not hooks:
        return 0
    images = with_captions(Image.objects.filter(pk__in=image_ids, owner_id__in=list(hooks)))
    active = active_model_version()

    def data(image: Image) -> dict:
        shown = choose_captions(image, active).best
        return {
            **_image_data(image),
            "caption": shown.text if shown is not None else None,
            "caption_source": shown.source if shown is not None else None,
            "model_version": model_version.name,
        }

    return _record(Webhook.Event.CAPTION_DONE, hooks, images, data)


def images_failed(image_ids: Sequence[int]) -> int:
    """A `caption.failed` delivery (with the image's error, as this transaction just wrote it) for each
    webhook subscribed to it of each image's owner. Returns how many."""
    hooks = _listening(Webhook.Event.CAPTION_FAILED, image_ids)
    if not hooks:
        return 0
    images = Image.objects.filter(pk__in=image_ids, owner_id__in=list(hooks))

    def data(image: Image) -> dict:
        return {**_image_data(image), "error": image.error, "attempts": image.attempts}

    return _record(Webhook.Event.CAPTION_FAILED, hooks, images, data)


def _listening(event: str, image_ids: Sequence[int]) -> dict[int, list[Webhook]]:
    """The active webhooks subscribed to `event` of the images' owners, by owner id."""
    if not image_ids:
        return {}
    owners = Image.objects.filter(pk__in=image_ids).values("owner_id")
    by_owner: dict[int, list[Webhook]] = defaultdict(list)
    for hook in Webhook.objects.filter(active=True, events__contains=[event], owner_id__in=owners):
        by_owner[hook.owner_id].append(hook)
    return by_owner


def _record(event: str, hooks: dict[int, list[Webhook]], images: Iterable[Image], data) -> int:
    now = timezone.now()
    deliveries = []
    for image in images:
        payload = _envelope(event, now, data(image))
        deliveries += [
            WebhookDelivery(
                webhook=hook, event=event, image=image, payload=payload, next_attempt_at=now, sent_at=now
            )
            for hook in hooks[image.owner_id]
        ]
    created = WebhookDelivery.objects.bulk_create(deliveries)
    _send_on_commit([d.pk for d in created])
    return len(created)


def _image_data(image: Image) -> dict:
    site = settings.IMGCAP_SITE_URL.rstrip("/")  # outside a request: where the site is reachable
    return {
        "id": image.pk,
        "status": image.status,
        "original_name": image.original_name,
        "batch": image.batch_id,
        "urls": {
            "self": site + reverse("api:image-detail", args=[image.pk]),
            "page": site + reverse("captions:image", args=[image.pk]),
            "file": site + reverse("media", args=[image.file.name]),
            "thumb": site + reverse("thumbnail", args=[image.pk]),
        },
    }


def _envelope(event: str, at: datetime, data: dict) -> dict:
    """The body every event has (the Standard Webhooks payload structure)."""
    return {"type": event, "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"), "data": data}


# --- delivering (the worker's task; the reaper) ---------------------------------------------------


def deliver(delivery_id: int) -> DeliveryReport:
    """One attempt at a delivery whose time has come; a message for one not due (a duplicate, or
    another attempt in flight) does nothing. A database error is raised for the task to retry."""
    claimed = _claim(delivery_id)
    if isinstance(claimed, str):
        return DeliveryReport(delivery=delivery_id, skipped=claimed)
    if claimed.status != WebhookDelivery.Status.PENDING:  # failed while claiming (webhook off, gave up)
        return DeliveryReport(delivery=delivery_id, status=claimed.status)
    _attempt(claimed)
    return DeliveryReport(delivery=delivery_id, status=claimed.status)


def resend_due_deliveries(*, after_s: float, limit: int = 256) -> list[int]:
    """Send the task again for pending deliveries that are due and whose last message was sent (or
    was due to arrive) over `after_s` ago: retries too far away to be held as a message, messages
    lost with a broker restart, attempts whose worker died. Sending twice is harmless: the second
    finds the delivery claimed or done. Returns their ids."""
    now = timezone.now()
    quiet = Q(sent_at__isnull=True) | Q(sent_at__lt=now - timedelta(seconds=after_s))
    with transaction.atomic():
        ids = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(quiet, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        WebhookDelivery.objects.filter(id__in=ids).update(sent_at=now)
        _send_on_commit(ids)
    return ids


def _claim(delivery_id: int) -> WebhookDelivery | str:
    """The delivery, its attempt counted and held until _claim_until, or why there is nothing to do.
    One whose webhook is off, or whose attempts a dead worker used up, is failed here instead."""
    now = timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:
            return "no such delivery, or another task holds it"
        if delivery.status != WebhookDelivery.Status.PENDING:
            return "not pending"
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            return "not due"
        tries = len(settings.IMGCAP_WEBHOOK_RETRY_DELAYS_S) + 1
        if not delivery.webhook.active:
            _finish(delivery, WebhookDelivery.Status.FAILED, now, error="not sent: the webhook is turned off")
        elif delivery.attempts >= tries:
            _finish(delivery, WebhookDelivery.Status.FAILED, now, error=f"gave up after {tries} attempts")
        else:
            delivery.attempts += 1
            delivery.next_attempt_at = _claim_until(now)
            delivery.save(update_fields=["attempts", "next_attempt_at"])
    return delivery


def _claim_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.IMGCAP_WEBHOOK_TIMEOUT_S + CLAIM_GRACE_S)


def _attempt(delivery: WebhookDelivery) -> None:
    """POST the claimed delivery and record the outcome (its attempt is already counted)."""
    webhook = delivery.webhook
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)
    answer: PostAnswer | None = None
    error = ""
    try:
        answer = post_json(
            webhook.url,
            body.encode(),
            headers=signed_headers(webhook.secret, f"msg_{delivery.pk}", body),
            timeout=settings.IMGCAP_WEBHOOK_TIMEOUT_S,
            allow_private=settings.IMGCAP_URL_ALLOW_PRIVATE,
        )
    except RejectedInput as exc:
        error = exc.message
    now = timezone.now()
    if answer is not None and answer.ok:
        _finish(delivery, WebhookDelivery.Status.DELIVERED, now, answer=answer)
        logger.info("imgcap webhook %d: delivery %d (%s) delivered", webhook.pk, delivery.pk, delivery.event)
        return
    if answer is not None:
        error = _answer_error(answer)
    delays = settings.IMGCAP_WEBHOOK_RETRY_DELAYS_S
    if answer is not None and answer.status == 410:  # Gone: the receiver asks us to stop
        reason = f"the receiver answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC"
        Webhook.objects.filter(pk=webhook.pk).update(active=False, deactivated_reason=reason)
        webhook.active, webhook.deactivated_reason = False, reason
        _finish(delivery, WebhookDelivery.Status.FAILED, now, answer=answer, error=error)
    elif delivery.event == TEST_EVENT or delivery.attempts > len(delays):
        _finish(delivery, WebhookDelivery.Status.FAILED, now, answer=answer, error=error)
    else:
        delay = delays[delivery.attempts - 1]
        _retry_later(delivery, now, delay, answer=answer, error=error)
        logger.info(
            "imgcap webhook %d: delivery %d attempt %d failed (%s); again in %d s",
            webhook.pk,
            delivery.pk,
            delivery.attempts,
            error,
            delay,
        )
        return
    logger.warning("imgcap webhook %d: delivery %d failed: %s", webhook.pk, delivery.pk, error)


def signed_headers(secret: str, message_id: str, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed now with `secret` (`whsec_…`)."""
    at = datetime.fromtimestamp(int(timezone.now().timestamp()), tz=UTC)  # whole seconds, as signed
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, at, body),
    }


def _answer_error(answer: PostAnswer) -> str:
    text = f"HTTP {answer.status} {answer.reason}".rstrip()
    said = answer.body.decode("utf-8", "replace").strip()
    said = "".join(c if c.isprintable() else " " for c in said)[:ANSWER_SNIPPET_CHARS]
    return f"{text}: {said}" if said else text


def _finish(
    delivery: WebhookDelivery,
    status: str,
    now: datetime,
    *,
    answer: PostAnswer | None = None,
    error: str = "",
) -> None:
    delivery.status, delivery.next_attempt_at, delivery.last_error = status, None, error
    delivery.response_status = answer.status if answer is not None else None
    delivery.delivered_at = now if status == WebhookDelivery.Status.DELIVERED else None
    delivery.save(
        update_fields=["status", "next_attempt_at", "last_error", "response_status", "delivered_at"]
    )


def _retry_later(
    delivery: WebhookDelivery, now: datetime, delay: int, *, answer: PostAnswer | None, error: str
) -> None:
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    delivery.last_error = error
    delivery.response_status = answer.status if answer is not None else None
    held = delay <= HELD_RETRY_MAX_S
    if held:
        delivery.sent_at = delivery.next_attempt_at  # the reaper counts from when it should arrive
    with transaction.atomic():
        delivery.save(update_fields=["next_attempt_at", "last_error", "response_status", "sent_at"])
        if held:
            _send_on_commit([delivery.pk], countdown=delay)


def _send_on_commit(ids: Sequence[int], *, countdown: float | None = None) -> None:
    """Send each delivery's task once the current transaction commits. A broker outage is logged: the
    reaper sends it again."""
    if not ids:
        return
    ids = list(ids)

    def send() -> None:
        from imgcap_site.celery import app as celery_app

        for pk in ids:
            try:
                # Routed to the fetch queue by CELERY_TASK_ROUTES (settings).
                celery_app.send_task(DELIVER_TASK, args=[pk], countdown=countdown)
            except Exception:  # noqa: BLE001 - any broker failure; the reaper recovers
                logger.exception("could not send webhook delivery %s; the reaper will retry", pk)

    transaction.on_commit(send)


def _checked_url(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise RejectedInput("url_invalid", "give the URL to deliver to")
    if len(url) > 2048:
        raise RejectedInput("url_invalid", "the URL is longer than 2048 characters")
    return check_url(url, allow_private=settings.IMGCAP_URL_ALLOW_PRIVATE)


def _checked_events(events: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(events))
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        got = ", ".join(map(repr, chosen)) or "none"
        raise RejectedInput("bad_events", f"events must be one or more of {', '.join(EVENTS)}; got {got}")
    return chosen


def _exists(url: str) -> RejectedInput:
    return RejectedInput("webhook_exists", f"you already have a webhook for {url}", status=409)
