"""Every error under /api/ has the API's body {"error": {"code", "message"}}; elsewhere Django's pages."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory
from django.urls import get_resolver

pytestmark = pytest.mark.django_db


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response.content[:200]
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/images/abc/", "/api/v1/nothing-here/", "/api/v2/images/", "/api/"])
def test_unknown_api_paths_are_a_json_404(api, settings, debug, path):
    settings.DEBUG = debug
    error = assert_json_error(api.get(path), 404, "not_found")
    assert path in error["message"]


def test_unknown_api_paths_are_a_json_404_for_anonymous_clients_and_any_method(anon_api, api):
    assert_json_error(anon_api.get("/api/v1/images/abc/"), 404, "not_found")
    assert_json_error(api.post("/api/v1/images/abc/", {}, format="json"), 404, "not_found")
    assert_json_error(api.delete("/api/v1/whatever/"), 404, "not_found")


def test_other_unknown_paths_keep_the_html_page(client, settings):
    settings.DEBUG = False
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_missing_trailing_slash_still_redirects_a_get(api):
    response = api.get("/api/v1/images?status=done")
    assert response.status_code == 301
    assert response["Location"] == "/api/v1/images/?status=done"


def test_a_missing_trailing_slash_on_a_post_names_the_right_path(api):
    # A redirect would drop the upload; say where it should have gone instead.
    error = assert_json_error(api.post("/api/v1/images", {}, format="json"), 404, "not_found")
    assert "/api/v1/images/" in error["message"]


def test_wrong_methods_are_a_json_405(api, anon_api):
    assert_json_error(api.delete("/api/v1/search/"), 405, "method_not_allowed")
    response = anon_api.post("/api/v1/docs/", {}, format="json")
    assert_json_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]
    assert anon_api.get("/api/v1/docs/").status_code == 200


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_request"), (403, "permission_denied"), (404, "not_found"), (500, "server_error")],
)
def test_error_handlers_answer_json_under_api_and_html_elsewhere(status, code):
    # What Django calls with DEBUG off for errors no view answered itself (e.g. an exception in a view).
    handler = get_resolver().resolve_error_handler(status)
    args = () if status == 500 else (Exception("boom"),)

    api_response = handler(RequestFactory().get("/api/v1/images/1/"), *args)
    assert api_response.status_code == status
    assert api_response["Content-Type"] == "application/json"
    error = json.loads(api_response.content)["error"]
    assert error["code"] == code and error["message"] and "boom" not in error["message"]

    page = handler(RequestFactory().get("/images/1/"), *args)
    assert page.status_code == status
    assert page["Content-Type"].startswith("text/html")


@pytest.mark.django_db(transaction=True)
def test_a_database_that_does_not_answer_is_a_503_with_retry_after(api, client, photo, database_outage):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from captions.models import Image

    database_outage.start()
    upload = {"image": SimpleUploadedFile("a.jpg", photo(), "image/jpeg")}
    for response in (api.get("/api/v1/images/"), api.post("/api/v1/images/", upload, format="multipart")):
        error = assert_json_error(response, 503, "database_unavailable")
        assert response["Retry-After"] == "5" and "nothing was stored" in error["message"]
    page = client.get("/")
    assert page.status_code == 503 and page["Retry-After"] == "5"
    assert "Back in a moment" in page.content.decode()
    health = api.get("/api/v1/health/")  # the view's own 503 says when to come back too
    assert health.status_code == 503 and health["Retry-After"] == "5"
    database_outage.end()
    # The database back: the same requests answer again, and the refused upload stored nothing.
    assert api.get("/api/v1/images/").status_code == 200
    assert not Image.objects.exists()


def test_a_request_announcing_too_many_bytes_is_refused_unread(api, client, settings):
    # The body sent is 10 bytes; only the announced length is large. Reading past those 10 bytes
    # would fail the test client's payload, so a 413 here means the body was never read.
    def announce(path: str, length: int, via=api):
        return via.generic(
            "POST",
            path,
            b"0123456789",
            content_type="multipart/form-data; boundary=x",
            CONTENT_LENGTH=str(length),
        )

    error = assert_json_error(announce("/api/v1/images/", 64 * 1024 * 1024), 413, "request_too_large")
    assert "over the limit of 50.1 MiB for /api/v1/images/" in error["message"]
    settings.IMGCAP_MAX_REQUEST_BYTES = 1024 * 1024
    assert_json_error(announce("/api/v1/batches/", 2 * 1024 * 1024), 413, "request_too_large")
    page = announce("/upload/", 2 * 1024 * 1024, via=client)
    assert page.status_code == 413 and "over the limit" in page.content.decode()


# Malformed parameters found by fuzzing: never a 500 (a huge number overflows Postgres' bigint; Postgres
# refuses a NUL character in any string). A number no row can have finds nothing; the rest are a 4xx
# with a message.
@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/images/?ids=99999999999999999999",
        "/api/v1/images/?batch=99999999999999999999",
        "/api/v1/images/?tag=%00",
        "/api/v1/export.csv?batch=99999999999999999999",
        "/api/v1/export.csv?model=%00",
        "/api/v1/export.csv?q=%00",
        "/api/v1/search/?q=%00",
        "/api/v1/search/?q=dog%00s",
        "/api/v1/images/1/similar/?limit=%00",
        "/api/v1/images/99999999999999999999/similar/",
    ],
)
def test_malformed_api_parameters_are_never_a_500(api, path):
    answer = api.get(path)
    assert answer.status_code in (200, 400, 404), path
    if answer.status_code != 200:
        assert answer.json()["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/?batch=99999999999999999999", "/?tag=%00", "/search/?q=%00", "/media/%00"]
)
def test_malformed_page_parameters_are_never_a_500(alice, path):
    assert alice.get(path).status_code in (200, 404)


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    "path", ["/api/v1/images/", "/api/v1/batches/", "/api/v1/search/?q=dog", "/api/v1/models/"]
)
def test_a_browser_opening_the_api_gets_json_not_a_500(alice, path):
    response = alice.get(path, HTTP_ACCEPT=BROWSER_ACCEPT)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"


def test_api_errors_are_json_for_a_browser_too(alice):
    response = alice.get("/api/v1/images/999999/", HTTP_ACCEPT=BROWSER_ACCEPT)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_cache_that_does_not_answer_lets_requests_through_uncounted(api, client, photo, settings, caplog):
    """The request rates are counted in the shared cache (Redis beside the broker): while it cannot be
    reached (Redis restarting) requests go through uncounted, never a 500 and not refused for it."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from captions.models import Image

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
        }
    }
    settings.IMGCAP_THROTTLE_RATES = {**settings.IMGCAP_THROTTLE_RATES, "upload": "1/minute"}
    for n in range(2):  # over the rate: nothing counts while the counts are away
        upload = {"image": SimpleUploadedFile(f"{n}.jpg", photo(), "image/jpeg")}
        assert api.post("/api/v1/images/", upload, format="multipart").status_code == 202
    assert api.get("/api/v1/search/?q=dog").status_code == 200
    assert client.get("/search/?q=dog").status_code == 200  # the pages count in the same cache
    assert Image.objects.count() == 2
    assert "request rates not counted: the cache does not answer" in caplog.text
