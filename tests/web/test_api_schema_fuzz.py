"""Schemathesis against the OpenAPI schema the API publishes: generated requests for every operation,
sent to a live server (real HTTP, the test database), each answer checked against the schema.

Bounded: EXAMPLES requests an operation (about half a minute in all). Checked: no server error, every
status code, content type, header and body is the documented one. Not checked: that every
schema-valid request is accepted (positive data acceptance): a batch id that does not exist or an
empty batch are valid shapes with a 4xx answer, by design.
"""

from __future__ import annotations

import pytest

EXAMPLES = 12

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def no_waiting(settings):
    """Long polls answer at once (as past the waiting limit): the pending image would hold each
    generated ?wait= for up to 30 s."""
    settings.IMGCAP_MAX_WAITING_REQUESTS = 0


def test_every_operation_answers_as_its_schema_says(live_server, user, make_image, no_waiting):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from rest_framework.authtoken.models import Token
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    make_image(user, visibility="public")  # something to list, search and export
    token, _ = Token.objects.get_or_create(user=user)
    schema = schemathesis.openapi.from_url(live_server.url + "/api/v1/schema/")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Token {token.key}"}, excluded_checks=[positive_data_acceptance]
            )

        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - hypothesis raises groups; each is reported
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
