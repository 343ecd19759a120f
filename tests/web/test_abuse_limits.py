"""Abuse limits: sign-in lockouts (django-axes), request rates per user and scope, per-user quotas.

Each limit is set small here through settings, the way an operator sets it through the environment.
"""

from __future__ import annotations

import pytest
from django.test import Client

from captions.models import Image

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
IMAGES = "/api/v1/images/"
BATCHES = "/api/v1/batches/"


def sign_in(client: Client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_repeated_wrong_passwords_lock_the_account_and_the_address(client, user, django_user_model, settings):
    assert settings.AXES_FAILURE_LIMIT == 5  # the default an operator gets
    for _ in range(4):
        assert sign_in(client, "alice", "wrong-guess").status_code == 200  # the form again, with its error
    assert sign_in(client, "alice", "wrong-guess").status_code == 429  # the fifth locks

    # The right password is refused now, from this address and from any other (the account is locked).
    locked = sign_in(client, "alice", "alice-password")
    assert locked.status_code == 429 and b"Sign-in paused" in locked.content
    assert "_auth_user_id" not in client.session
    assert sign_in(Client(), "alice", "alice-password", address="10.9.9.9").status_code == 429

    # The address is locked too, for every account; another account from elsewhere still signs in.
    django_user_model.objects.create_user("bob", "bob@example.com", "bob-password")
    assert sign_in(Client(), "bob", "bob-password", address="10.0.0.1").status_code == 429
    elsewhere = Client()
    assert sign_in(elsewhere, "bob", "bob-password", address="10.7.7.7").status_code == 302
    assert elsewhere.session["_auth_user_id"]


def test_a_right_password_before_the_limit_clears_the_count(client, user):
    for _ in range(4):
        sign_in(client, "alice", "wrong-guess")
    assert sign_in(client, "alice", "alice-password").status_code == 302
    for _ in range(4):
        sign_in(Client(), "alice", "wrong-guess")
    assert sign_in(Client(), "alice", "alice-password").status_code == 302


def test_searches_over_the_rate_are_a_429_with_retry_after(api, other_api, settings):
    settings.IMGCAP_THROTTLE_RATES = {**settings.IMGCAP_THROTTLE_RATES, "search": "3/minute"}
    for _ in range(3):
        assert api.get("/api/v1/search/", {"q": "dog"}).status_code == 200
    refused = api.get("/api/v1/search/", {"q": "dog"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Counted per user: another user is not held back; other reads are not counted.
    assert other_api.get("/api/v1/search/", {"q": "dog"}).status_code == 200
    assert api.get(IMAGES).status_code == 200


def test_the_search_page_shares_the_rate_and_says_when_to_come_back(alice, settings):
    settings.IMGCAP_THROTTLE_RATES = {**settings.IMGCAP_THROTTLE_RATES, "search": "2/minute"}
    assert alice.get("/search/", {"q": "dog"}).status_code == 200
    assert alice.get("/search/", {"q": "dog"}).status_code == 200
    page = alice.get("/search/", {"q": "dog"})
    assert page.status_code == 429 and b"Slow down" in page.content and int(page["Retry-After"]) >= 1


def test_anonymous_clients_are_counted_by_address(anon_api, settings):
    settings.IMGCAP_THROTTLE_RATES = {**settings.IMGCAP_THROTTLE_RATES, "search": "1/minute"}
    assert anon_api.get("/api/v1/search/", {"q": "dog"}, REMOTE_ADDR="10.1.1.1").status_code == 200
    assert anon_api.get("/api/v1/search/", {"q": "dog"}, REMOTE_ADDR="10.1.1.1").status_code == 429
    assert anon_api.get("/api/v1/search/", {"q": "dog"}, REMOTE_ADDR="10.2.2.2").status_code == 200


def test_uploads_over_the_rate_store_nothing(api, user, photo, settings):
    settings.IMGCAP_THROTTLE_RATES = {**settings.IMGCAP_THROTTLE_RATES, "upload": "2/minute"}
    for _ in range(2):
        assert api.post(IMAGES, {"image": _file(photo())}, format="multipart").status_code == 202
    refused = api.post(IMAGES, {"image": _file(photo())}, format="multipart")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    assert Image.objects.filter(owner=user).count() == 2


def test_a_full_library_refuses_new_images_with_403_and_keeps_what_it_has(
    api, other_api, user, photo, settings
):
    first = photo()
    assert api.post(IMAGES, {"image": _file(first)}, format="multipart").status_code == 202
    settings.IMGCAP_USER_STORAGE_BYTES = len(first) + 100

    refused = api.post(IMAGES, {"image": _file(photo())}, format="multipart")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "storage_quota" and "delete some" in error["message"]
    batch = api.post(BATCHES, {"images": [_file(photo(), "b.jpg")]}, format="multipart")
    assert batch.status_code == 403 and batch.json()["error"]["code"] == "storage_quota"
    assert Image.objects.filter(owner=user).count() == 1
    # The same bytes again are the image already stored: no room needed.
    assert api.post(IMAGES, {"image": _file(first)}, format="multipart").json()["duplicate"] is True
    # The quota is each user's own.
    assert other_api.post(IMAGES, {"image": _file(photo())}, format="multipart").status_code == 202


def test_too_many_images_waiting_is_a_429_until_some_are_captioned(api, user, photo, settings):
    settings.IMGCAP_USER_QUEUE_IMAGES = 2
    for _ in range(2):
        assert api.post(IMAGES, {"image": _file(photo())}, format="multipart").status_code == 202

    refused = api.post(IMAGES, {"image": _file(photo())}, format="multipart")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_quota"
    assert int(refused["Retry-After"]) > 0
    assert "2 of your images are still waiting" in refused.json()["error"]["message"]
    assert Image.objects.filter(owner=user).count() == 2

    Image.objects.filter(owner=user).update(status=Image.Status.DONE)
    batch = api.post(BATCHES, {"images": [_file(photo(), f"{i}.jpg") for i in range(3)]}, format="multipart")
    assert batch.status_code == 429  # three would be over two: the whole batch waits, nothing stored
    assert Image.objects.filter(owner=user).count() == 2
    assert api.post(BATCHES, {"images": [_file(photo(), "ok.jpg")]}, format="multipart").status_code == 202


def _file(data: bytes, name: str = "photo.jpg"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def test_a_forged_x_forwarded_for_does_not_escape_the_count(anon_api, settings):
    settings.IMGCAP_THROTTLE_RATES = {**settings.IMGCAP_THROTTLE_RATES, "search": "1/minute"}
    first = anon_api.get(
        "/api/v1/search/", {"q": "cat"}, REMOTE_ADDR="10.3.3.3", HTTP_X_FORWARDED_FOR="1.1.1.1"
    )
    assert first.status_code == 200
    forged = anon_api.get(
        "/api/v1/search/", {"q": "cat"}, REMOTE_ADDR="10.3.3.3", HTTP_X_FORWARDED_FOR="2.2.2.2"
    )
    assert forged.status_code == 429
    # Behind one trusted proxy, the address it appended is the client's.
    settings.TRUSTED_PROXIES = 1
    behind = {"REMOTE_ADDR": "10.0.0.254"}
    assert (
        anon_api.get(
            "/api/v1/search/", {"q": "cat"}, HTTP_X_FORWARDED_FOR="9.9.9.9, 5.5.5.5", **behind
        ).status_code
        == 200
    )
    assert (
        anon_api.get(
            "/api/v1/search/", {"q": "cat"}, HTTP_X_FORWARDED_FOR="8.8.8.8, 5.5.5.5", **behind
        ).status_code
        == 429
    )
    assert (
        anon_api.get("/api/v1/search/", {"q": "cat"}, HTTP_X_FORWARDED_FOR="6.6.6.6", **behind).status_code
        == 200
    )


def test_pages_and_api_answers_carry_a_content_security_policy(client, anon_api):
    for response in (client.get("/"), client.get("/api/v1/docs/"), anon_api.get("/api/v1/health/")):
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    docs = client.get("/api/v1/docs/").content.decode()
    assert "<script>" not in docs.replace(" ", "")  # Swagger UI starts from a script file, not inline
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200 and "javascript" in script["Content-Type"]
