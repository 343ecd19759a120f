"""Webhooks: /api/v1/webhooks/ (owner only), caption.done and caption.failed deliveries signed per
Standard Webhooks and verified by a real receiver on 127.0.0.1, retries, 410 Gone, the reaper's
re-sends, and the address checks of URL fetching.

Deliveries run in-process as the fetch worker runs them (worker/tasks.py deliver_webhook calls
webhooks.deliver); time is moved by setting next_attempt_at, not by sleeping.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from captions import queue
from captions.models import Image, Webhook, WebhookDelivery
from captions.services import webhooks

pytestmark = pytest.mark.django_db

WEBHOOKS = "/api/v1/webhooks/"
DONE, FAILED = "caption.done", "caption.failed"


@pytest.fixture
def private_ok(settings):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True  # the receiver listens on 127.0.0.1


def register(api, url: str, **fields) -> dict:
    response = api.post(WEBHOOKS, {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def deliver_as_the_worker_does(delivery_id: int) -> webhooks.DeliveryReport:
    """What a fetch worker runs for the delivery's message (worker/tasks.py: deliver_webhook)."""
    return webhooks.deliver(delivery_id)


def verified(post: dict, secret: str) -> dict:
    """The body of a POST the receiver got, verified as a client would: standardwebhooks' Webhook."""
    return Verifier(secret).verify(post["body"], post["headers"])


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def caption(image, version, text: str = "a dog runs on the grass") -> None:
    """Captions stored as the worker stores them (queue.store_captions), without the embedding model."""
    queue.store_captions(
        model_version=version, results=[(image, [queue.CandidateData(text=text, score=-0.4)])]
    )


# --- the API ---------------------------------------------------------------------------------------


def test_register_list_change_and_delete_a_webhook_owner_only(api, other_api, anon_api):
    created = api.post(WEBHOOKS, {"url": "https://hooks.example.org/imgcap", "events": [DONE]}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["events"] == [DONE] and body["active"] is True and body["deactivated_reason"] == ""
    assert created["Location"] == body["urls"]["self"] == f"http://testserver{WEBHOOKS}{body['id']}/"
    detail = body["urls"]["self"]

    listed = api.get(WEBHOOKS).json()
    assert listed["count"] == 1 and "secret" not in listed["results"][0]
    shown = api.get(detail).json()
    assert "secret" not in shown and shown["url"] == "https://hooks.example.org/imgcap"
    # Without events: all of them.
    assert register(api, "https://hooks.example.org/other")["events"] == [DONE, FAILED]

    # Someone else's webhook does not exist for you, whatever you ask of it.
    assert other_api.get(WEBHOOKS).json()["count"] == 0
    for method, path in [
        ("get", detail),
        ("patch", detail),
        ("delete", detail),
        ("post", f"{detail}rotate-secret/"),
        ("post", f"{detail}test/"),
        ("get", f"{detail}deliveries/"),
    ]:
        assert_error(getattr(other_api, method)(path, {"active": False}, format="json"), 404, "not_found")
    assert_error(anon_api.get(WEBHOOKS), 401, "not_authenticated")
    assert_error(
        anon_api.post(WEBHOOKS, {"url": "https://a.example/"}, format="json"), 401, "not_authenticated"
    )

    changed = api.patch(detail, {"events": [FAILED, DONE, FAILED], "active": False}, format="json")
    assert changed.status_code == 200 and changed.json()["events"] == [FAILED, DONE]
    assert changed.json()["active"] is False and "secret" not in changed.json()
    assert_error(api.patch(detail, {}, format="json"), 400, "invalid")
    assert_error(
        api.patch(detail, {"url": "https://hooks.example.org/other"}, format="json"), 409, "webhook_exists"
    )

    assert api.delete(detail).status_code == 204
    assert_error(api.get(detail), 404, "not_found")
    assert Webhook.objects.filter(owner__username="alice").count() == 1


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"url": "http://127.0.0.1:8000/hook"}, 400, "url_forbidden_host"),
        ({"url": "http://10.1.2.3/hook"}, 400, "url_forbidden_host"),
        ({"url": "http://[::1]/hook"}, 400, "url_forbidden_host"),
        ({"url": "http://169.254.169.254/latest"}, 400, "url_forbidden_host"),
        ({"url": "ftp://hooks.example.org/"}, 400, "url_scheme"),
        ({"url": "https://user:pw@hooks.example.org/"}, 400, "url_userinfo"),
        ({"url": "https://"}, 400, "url_invalid"),
        ({"url": ""}, 400, "invalid"),
        ({}, 400, "invalid"),
        ({"url": "https://hooks.example.org/", "events": ["caption.maybe"]}, 400, "invalid"),
        ({"url": "https://hooks.example.org/", "events": []}, 400, "invalid"),
        ({"url": "https://hooks.example.org/", "active": "perhaps"}, 400, "invalid"),
    ],
)
def test_bad_webhooks_are_refused_and_nothing_is_stored(api, fields, status, code):
    assert_error(api.post(WEBHOOKS, fields, format="json"), status, code)
    assert Webhook.objects.count() == 0


def test_private_addresses_are_refused_at_creation_unless_allowed(api, settings):
    settings.IMGCAP_URL_ALLOW_PRIVATE = False
    error = assert_error(
        api.post(WEBHOOKS, {"url": "http://192.168.1.20/hook"}, format="json"), 400, "url_forbidden_host"
    )
    assert "192.168.1.20" in error["message"]
    hook = register(api, "https://hooks.example.org/imgcap")
    assert_error(
        api.patch(hook["urls"]["self"], {"url": "http://127.0.0.1/x"}, format="json"),
        400,
        "url_forbidden_host",
    )
    settings.IMGCAP_URL_ALLOW_PRIVATE = True  # tests, closed networks; metadata addresses stay refused
    register(api, "http://192.168.1.20/hook")
    assert_error(
        api.post(WEBHOOKS, {"url": "http://169.254.169.254/"}, format="json"), 400, "url_forbidden_host"
    )


def test_a_user_keeps_at_most_the_configured_number_of_webhooks(api, other_api, settings):
    settings.IMGCAP_MAX_WEBHOOKS_PER_USER = 2
    register(api, "https://hooks.example.org/1")
    register(api, "https://hooks.example.org/2")
    assert_error(
        api.post(WEBHOOKS, {"url": "https://hooks.example.org/3"}, format="json"), 403, "webhook_quota"
    )
    register(other_api, "https://hooks.example.org/1")  # per user; the same URL is fine for someone else
    assert_error(
        api.post(WEBHOOKS, {"url": "https://hooks.example.org/1"}, format="json"), 403, "webhook_quota"
    )


def test_creating_webhooks_is_throttled(api, settings):
    settings.IMGCAP_THROTTLE_RATES = {**settings.IMGCAP_THROTTLE_RATES, "webhook": "2/minute"}
    register(api, "https://hooks.example.org/1")
    register(api, "https://hooks.example.org/2")
    response = api.post(WEBHOOKS, {"url": "https://hooks.example.org/3"}, format="json")
    assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    assert api.get(WEBHOOKS).status_code == 200  # reading is not counted


# --- deliveries --------------------------------------------------------------------------------------


def test_caption_done_is_delivered_signed_once_captions_are_stored(
    api,
    user,
    other_user,
    make_image,
    model_version,
    save_captions,
    webhook_receiver,
    private_ok,
    settings,
    broker_messages,
    django_capture_on_commit_callbacks,
):
    settings.IMGCAP_SITE_URL = "https://imgcap.example.org"
    hook = register(api, webhook_receiver.url, events=[DONE])
    register(api, webhook_receiver.url + "/failures", events=[FAILED])  # not told of captions
    image = make_image(user)
    others = make_image(other_user)

    with django_capture_on_commit_callbacks(execute=True):
        save_captions(image, model_version, ["a dog runs on the grass", "a dog on the grass"])
        save_captions(others, model_version, ["a cat sleeps"])  # bob has no webhook
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.image_id, delivery.status, delivery.attempts) == (
        DONE,
        image.pk,
        "pending",
        0,
    )
    sent = [m for m in broker_messages() if m["task"] == "imgcap.deliver_webhook"]
    assert [(m["queue"], m["args"]) for m in sent] == [("fetch", [delivery.pk])]
    assert webhook_receiver.received == []  # nothing is POSTed inside the worker's store

    report = deliver_as_the_worker_does(delivery.pk)
    assert report.status == "delivered" and not report.skipped
    (post,) = webhook_receiver.received
    assert post["path"] == "/hooks/imgcap" and post["headers"]["content-type"] == "application/json"
    assert post["headers"]["webhook-id"] == f"msg_{delivery.pk}"
    assert post["headers"]["webhook-signature"].startswith("v1,")
    body = verified(post, hook["secret"])
    assert body["type"] == DONE and body["timestamp"].endswith("Z")
    data = body["data"]
    assert (data["id"], data["status"], data["caption"], data["caption_source"]) == (
        image.pk,
        "done",
        "a dog runs on the grass",
        "model",
    )
    assert data["model_version"] == model_version.name and data["original_name"] == image.original_name
    assert data["urls"]["self"] == f"https://imgcap.example.org/api/v1/images/{image.pk}/"
    assert data["urls"]["file"] == f"https://imgcap.example.org/media/{image.file.name}"
    # What was signed is what the API shows the image as.
    assert api.get(f"/api/v1/images/{image.pk}/").json()["caption"]["text"] == data["caption"]
    with pytest.raises(WebhookVerificationError):
        Verifier(webhooks.new_secret()).verify(post["body"], post["headers"])

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status, delivery.last_error) == (
        "delivered",
        1,
        200,
        "",
    )
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    # The same message delivered again (Redis, the reaper) sends nothing.
    assert deliver_as_the_worker_does(delivery.pk).skipped == "not pending"
    assert len(webhook_receiver.received) == 1

    listed = api.get(f"{hook['urls']['deliveries']}").json()
    assert listed["count"] == 1
    shown = listed["results"][0]
    assert (shown["id"], shown["event"], shown["image"], shown["status"]) == (
        delivery.pk,
        DONE,
        image.pk,
        "delivered",
    )
    assert shown["payload"] == body


def test_caption_failed_on_mark_failed_and_when_the_reaper_gives_up(
    api, user, make_image, webhook_receiver, private_ok, settings
):
    hook = register(api, webhook_receiver.url, events=[FAILED])
    broken, hopeless = make_image(user), make_image(user)
    queue.mark_failed(image=broken, error="the model could not read this image")
    Image.objects.filter(pk=hopeless.pk).update(
        status="processing",
        attempts=settings.IMGCAP_MAX_ATTEMPTS,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    assert queue.requeue_stale(older_than_s=60) == []  # given up, not requeued

    for delivery in WebhookDelivery.objects.order_by("id"):
        assert deliver_as_the_worker_does(delivery.pk).status == "delivered"
    first, second = (verified(post, hook["secret"]) for post in webhook_receiver.received)
    assert (first["type"], first["data"]["id"], first["data"]["status"]) == (FAILED, broken.pk, "failed")
    assert first["data"]["error"] == "the model could not read this image"
    assert (second["data"]["id"], second["data"]["error"]) == (
        hopeless.pk,
        f"gave up after {settings.IMGCAP_MAX_ATTEMPTS} attempts",
    )


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    api,
    user,
    make_image,
    model_version,
    webhook_receiver,
    private_ok,
    settings,
    broker_messages,
    django_capture_on_commit_callbacks,
):
    hook = register(api, webhook_receiver.url)
    webhook_receiver.answers = [500, 302]
    caption(make_image(user), model_version)
    delivery = WebhookDelivery.objects.get()

    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver_as_the_worker_does(delivery.pk).status == "pending"
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status) == (1, 500)
    assert delivery.last_error == "HTTP 500 Internal Server Error: receiver says no"
    first_delay = settings.IMGCAP_WEBHOOK_RETRY_DELAYS_S[0]
    assert before + timedelta(seconds=first_delay) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= timezone.now() + timedelta(seconds=first_delay)
    # The retry travels as a delayed message; sent early (a duplicate), it finds the delivery not due.
    retry = [m for m in broker_messages() if m["task"] == "imgcap.deliver_webhook"]
    assert [(m["queue"], m["args"]) for m in retry] == [("fetch", [delivery.pk])]
    assert deliver_as_the_worker_does(delivery.pk).skipped == "not due"
    assert len(webhook_receiver.received) == 1

    # A redirect is an answer like any other: not followed (/moved is never asked for), tried again.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert deliver_as_the_worker_does(delivery.pk).status == "pending"
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status) == (2, 302)
    second_delay = settings.IMGCAP_WEBHOOK_RETRY_DELAYS_S[1]
    assert delivery.next_attempt_at >= timezone.now() + timedelta(seconds=second_delay - 5)

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert deliver_as_the_worker_does(delivery.pk).status == "delivered"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status, delivery.last_error) == (
        "delivered",
        3,
        200,
        "",
    )
    posts = webhook_receiver.received
    assert [p["path"] for p in posts] == ["/hooks/imgcap"] * 3
    # Every attempt is the same message (one webhook-id, one body), signed afresh.
    assert {p["headers"]["webhook-id"] for p in posts} == {f"msg_{delivery.pk}"}
    assert len({p["body"] for p in posts}) == 1
    assert all(verified(p, hook["secret"])["type"] == DONE for p in posts)


def test_retries_run_out_then_the_delivery_failed(
    api, user, make_image, webhook_receiver, private_ok, settings
):
    settings.IMGCAP_WEBHOOK_RETRY_DELAYS_S = [10, 60]
    register(api, webhook_receiver.url)
    webhook_receiver.answers = [503, 503, 503, 200]
    queue.mark_failed(image=make_image(user), error="broken")
    delivery = WebhookDelivery.objects.get()
    for _ in range(3):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        deliver_as_the_worker_does(delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 3, 503)
    assert delivery.next_attempt_at is None and delivery.last_error.startswith("HTTP 503")
    assert deliver_as_the_worker_does(delivery.pk).skipped == "not pending"
    assert len(webhook_receiver.received) == 3


def test_an_unreachable_receiver_is_retried_with_the_network_error(api, user, make_image, private_ok):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    register(api, f"http://127.0.0.1:{port}/hook")
    queue.mark_failed(image=make_image(user), error="broken")
    delivery = WebhookDelivery.objects.get()
    assert deliver_as_the_worker_does(delivery.pk).status == "pending"
    delivery.refresh_from_db()
    assert delivery.response_status is None and delivery.attempts == 1
    assert "cannot connect" in delivery.last_error and f"127.0.0.1:{port}" in delivery.last_error


def test_410_gone_turns_the_webhook_off(api, user, make_image, model_version, webhook_receiver, private_ok):
    hook = register(api, webhook_receiver.url)
    webhook_receiver.answers = [410]
    caption(make_image(user), model_version)
    delivery = WebhookDelivery.objects.get()
    assert deliver_as_the_worker_does(delivery.pk).status == "failed"
    delivery.refresh_from_db()
    assert (delivery.response_status, delivery.next_attempt_at) == (410, None)
    shown = api.get(hook["urls"]["self"]).json()
    assert shown["active"] is False and "410 Gone" in shown["deactivated_reason"]

    caption(make_image(user), model_version)  # no longer told
    assert WebhookDelivery.objects.count() == 1
    turned_on = api.patch(hook["urls"]["self"], {"active": True}, format="json").json()
    assert turned_on["active"] is True and turned_on["deactivated_reason"] == ""


def test_a_delivery_whose_webhook_was_turned_off_meanwhile_is_not_sent(
    api, user, make_image, webhook_receiver, private_ok
):
    hook = register(api, webhook_receiver.url)
    queue.mark_failed(image=make_image(user), error="broken")
    api.patch(hook["urls"]["self"], {"active": False}, format="json")
    delivery = WebhookDelivery.objects.get()
    assert deliver_as_the_worker_does(delivery.pk).status == "failed"
    delivery.refresh_from_db()
    assert delivery.last_error == "not sent: the webhook is turned off" and webhook_receiver.received == []


def test_a_host_name_is_checked_again_when_delivering(api, user, make_image, webhook_receiver, settings):
    # localhost passes the network-free check at creation; at delivery it resolves to 127.0.0.1: refused.
    settings.IMGCAP_URL_ALLOW_PRIVATE = False
    register(api, webhook_receiver.url.replace("127.0.0.1", "localhost"))
    queue.mark_failed(image=make_image(user), error="broken")
    delivery = WebhookDelivery.objects.get()
    assert deliver_as_the_worker_does(delivery.pk).status == "pending"
    delivery.refresh_from_db()
    assert "non-public address" in delivery.last_error and webhook_receiver.received == []


def test_the_reaper_sends_again_deliveries_whose_message_was_lost(
    api, user, make_image, webhook_receiver, private_ok, broker_messages, django_capture_on_commit_callbacks
):
    hook = register(api, webhook_receiver.url)
    # Recorded, but its message never reached a worker (this test's transaction never commits, as if
    # Redis had restarted with it).
    queue.mark_failed(image=make_image(user), error="broken")
    delivery = WebhookDelivery.objects.get()
    assert webhooks.resend_due_deliveries(after_s=20) == []  # sent just now: not lost yet
    WebhookDelivery.objects.filter(pk=delivery.pk).update(sent_at=timezone.now() - timedelta(seconds=21))
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks.resend_due_deliveries(after_s=20) == [delivery.pk]
    sent = [m for m in broker_messages() if m["task"] == "imgcap.deliver_webhook"]
    assert [(m["queue"], m["args"]) for m in sent] == [("fetch", [delivery.pk])]
    assert webhooks.resend_due_deliveries(after_s=20) == []  # once a round
    assert deliver_as_the_worker_does(delivery.pk).status == "delivered"
    assert verified(webhook_receiver.received[0], hook["secret"])["data"]["error"] == "broken"


def test_a_long_wait_is_left_to_the_reaper_and_a_dead_attempt_is_sent_again(
    api,
    user,
    make_image,
    webhook_receiver,
    private_ok,
    settings,
    broker_messages,
    django_capture_on_commit_callbacks,
):
    settings.IMGCAP_WEBHOOK_RETRY_DELAYS_S = [3600, 3600]
    register(api, webhook_receiver.url)
    webhook_receiver.answers = [500]
    queue.mark_failed(image=make_image(user), error="broken")
    delivery = WebhookDelivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        deliver_as_the_worker_does(delivery.pk)
    assert [m for m in broker_messages() if m["task"] == "imgcap.deliver_webhook"] == []  # not held an hour
    assert webhooks.resend_due_deliveries(after_s=20) == []  # not due
    an_hour_later = {"next_attempt_at": timezone.now(), "sent_at": timezone.now() - timedelta(hours=1)}
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**an_hour_later)
    assert webhooks.resend_due_deliveries(after_s=20) == [delivery.pk]

    # An attempt in flight holds its delivery past its timeout: not sent again while it may still answer.
    claimed = webhooks._claim(delivery.pk)
    assert isinstance(claimed, WebhookDelivery) and claimed.attempts == 2
    WebhookDelivery.objects.filter(pk=delivery.pk).update(sent_at=timezone.now() - timedelta(minutes=5))
    assert webhooks.resend_due_deliveries(after_s=20) == []
    # Its worker died: once the hold is over, the reaper sends it again, and it is delivered.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert webhooks.resend_due_deliveries(after_s=20) == [delivery.pk]
    assert deliver_as_the_worker_does(delivery.pk).status == "delivered"
    delivery.refresh_from_db()
    assert delivery.attempts == 3 and len(webhook_receiver.received) == 2


def test_the_test_action_delivers_at_once_and_answers_with_the_outcome(api, webhook_receiver, private_ok):
    hook = register(api, webhook_receiver.url, events=[FAILED])
    response = api.post(f"{hook['urls']['self']}test/")
    assert response.status_code == 200, response.content
    outcome = response.json()
    assert (outcome["event"], outcome["status"], outcome["response_status"], outcome["attempts"]) == (
        "webhook.test",
        "delivered",
        200,
        1,
    )
    body = verified(webhook_receiver.received[0], hook["secret"])
    assert body["type"] == "webhook.test" and body["data"]["webhook"] == hook["id"]

    webhook_receiver.answers = [500]
    failed = api.post(f"{hook['urls']['self']}test/").json()
    assert (failed["status"], failed["response_status"], failed["next_attempt_at"]) == ("failed", 500, None)
    assert failed["last_error"].startswith("HTTP 500")
    listed = api.get(hook["urls"]["deliveries"], {"page_size": 1}).json()
    assert (
        listed["count"] == 2 and listed["next"] and listed["results"][0]["id"] == failed["id"]
    )  # newest first


def test_rotating_the_secret_signs_from_then_on_with_the_new_one_only(api, webhook_receiver, private_ok):
    hook = register(api, webhook_receiver.url)
    rotated = api.post(f"{hook['urls']['self']}rotate-secret/")
    assert rotated.status_code == 200
    secret = rotated.json()["secret"]
    assert secret.startswith("whsec_") and secret != hook["secret"]
    assert "secret" not in api.get(hook["urls"]["self"]).json()
    api.post(f"{hook['urls']['self']}test/")
    post = webhook_receiver.received[0]
    assert verified(post, secret)["type"] == "webhook.test"
    with pytest.raises(WebhookVerificationError):
        verified(post, hook["secret"])


def test_signed_headers_follow_the_standard(settings):
    secret = webhooks.new_secret()
    body = json.dumps({"type": "caption.done", "data": {"id": 1}})
    headers = webhooks.signed_headers(secret, "msg_1", body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-timestamp"].isdigit()
    assert Verifier(secret).verify(body, headers) == {"type": "caption.done", "data": {"id": 1}}
    with pytest.raises(WebhookVerificationError):  # the body changed on the way
        Verifier(secret).verify(body.replace("1", "2"), headers)
