"""The fault suite: real processes on services of the suite's own, broken on purpose.

A private redis-server and Postgres cluster (tests/web/fault_harness.py), and on them the platform as
docker-compose runs it: gunicorn with the production settings, Celery workers on both queues, one
`celery beat` for the reaper, the tiny model, and every timing knob at its default (settings/base.py).
Each fault is checked the same way: nothing lost (every accepted upload is captioned), nothing twice
(one caption set per image, stored by one micro-batch, claimed once unless its worker died), every image
done within FAULT_BOUND_S of the fault, and none failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.web.fault_harness import (
    Platform,
    PostgresCluster,
    RedisServer,
    Traffic,
    assert_captioned_exactly_once,
    real_photos,
)
from tests.web.platform_harness import wait_for

pytestmark = pytest.mark.e2e  # starts real processes

# The promise: every image done within this many seconds of the fault, with the default settings.
FAULT_BOUND_S = 30
USERS = ("redis-restart", "postgres-stop", "two-workers", "killed-worker")


@pytest.fixture(scope="module")
def platform(tiny_run, tmp_path_factory) -> Iterator[Platform]:
    folder = tmp_path_factory.mktemp("faults")
    redis_server = postgres = platform = None
    try:
        redis_server = RedisServer(folder)
        postgres = PostgresCluster()
        platform = Platform(folder, tiny_run, redis_server, postgres)
        for name in ("alpha", "beta"):  # two workers, as `docker compose up --scale worker=2` runs them
            platform.launch_worker(name)  # loading their model while the rest starts
        platform.migrate()
        platform.make_users(USERS)
        platform.start_web()
        platform.start_beat()
        platform.worker("alpha")
        platform.worker("beta")
        yield platform
    finally:
        if platform is not None:
            platform.stop_all()
        if postgres is not None:
            postgres.cleanup()
        if redis_server is not None:
            redis_server.stop()


def accepted_batch(platform: Platform, user: str, photos: Sequence[Path]) -> list[int]:
    """The ids of a batch upload's images (202: all stored, then queued at once)."""
    answer = platform.client(user).upload_batch(photos)
    assert answer.status == 202, answer.body[:500]
    ids = platform.batch_image_ids(answer.json()["id"])
    assert len(ids) == len(photos)
    return ids


def processing(platform: Platform, ids: Iterable[int]) -> set[int]:
    return {i for i, state in platform.images(ids).items() if state.status == "processing"}


def claimed(platform: Platform, ids: Iterable[int]) -> set[int]:
    """Those of `ids` a worker has taken: processing, or already done with (a tiny model is quick)."""
    return {i for i, state in platform.images(ids).items() if state.status in ("processing", "done")}


def reads_of(image_id: int) -> list[str]:
    """What the reading client asks for, in turn."""
    return [
        "/api/v1/images/?page_size=5",
        f"/api/v1/images/{image_id}/",
        "/api/v1/search/?q=dog",
        "/api/v1/health/",
    ]


def assert_no_server_errors(traffic: Traffic) -> None:
    """Every request answered; the only 5xx a 503, always with Retry-After."""
    assert not traffic.errors, traffic.errors[:5]
    failed = [(a.method, a.path, a.status, a.body[:300]) for a in traffic.answers if a.status >= 500]
    assert all(status == 503 for _, _, status, _ in failed), [f for f in failed if f[2] != 503][:5]
    no_retry = [
        (a.path, a.headers) for a in traffic.answers if a.status == 503 and "Retry-After" not in a.headers
    ]
    assert not no_retry, no_retry[:5]


def test_a_redis_restart_loses_no_image_and_captions_none_twice(platform):
    user = "redis-restart"
    ids = accepted_batch(platform, user, real_photos(64))  # 4 messages of 16 ids
    broker = platform.redis.client()
    # Each worker took a message (unacknowledged while it captions those images) and the others wait
    # in the queue: the restart loses them all.
    wait_for(lambda: processing(platform, ids), 30, "a worker to claim images")
    waiting, unacked = broker.llen("caption"), broker.hlen("unacked")
    assert waiting >= 1 and unacked >= 1, (waiting, unacked)
    with Traffic(platform.client(user), real_photos(20, start=400), reads_of(ids[0])) as traffic:
        platform.redis.restart()
        restarted = time.monotonic()
        time.sleep(3)  # clients go on calling the API across the restart
    assert_no_server_errors(traffic)

    accepted = set(ids) | set(traffic.uploaded())
    done = platform.wait_until_done(accepted, restarted + FAULT_BOUND_S, "after the Redis restart")
    assert set(platform.images_of(user)) == accepted
    assert_captioned_exactly_once(platform, accepted)
    print(f"redis restart: {len(accepted)} images done {done - restarted:.1f}s after it")


def test_postgres_stopped_mid_write_answers_503_and_loses_nothing(platform):
    user = "postgres-stop"
    first = accepted_batch(platform, user, real_photos(16, start=96))
    with Traffic(platform.client(user), real_photos(40, start=112), [*reads_of(first[0]), "/"]) as traffic:
        # The worker is captioning and writing the first batch (or, on a quick machine, has written it
        # and takes the clients' uploads as they come) while the clients upload more.
        wait_for(lambda: claimed(platform, first), 30, "the worker to claim the first batch")
        stopped = time.monotonic()
        platform.postgres.stop("immediate")
        time.sleep(6)
        platform.postgres.start()
        back = time.monotonic()
        time.sleep(3)  # the clients go on after it is back
    # No client ever saw a 500: while the database was away the API said 503 with Retry-After.
    assert_no_server_errors(traffic)
    outage = traffic.between(stopped + 0.5, back)
    assert {a.method for a in outage if a.status == 503} == {"GET", "POST"}, "no client saw the outage"
    assert [a for a in traffic.answers if a.at > back + 1 and a.status == 202], "no upload accepted after it"

    accepted = set(first) | set(traffic.uploaded())
    done = platform.wait_until_done(accepted, back + FAULT_BOUND_S, "after Postgres came back")
    assert set(platform.images_of(user)) == accepted  # a 503 stored nothing; every 202 is there
    assert_captioned_exactly_once(platform, accepted)
    refused = sum(a.status == 503 for a in traffic.answers)
    print(f"postgres stop: {refused} answers 503, {len(accepted)} images done {done - back:.1f}s after it")


def test_two_workers_at_once_caption_each_image_once(platform):
    platform.worker("alpha")
    platform.worker("beta")
    ids = accepted_batch(platform, "two-workers", real_photos(64, start=152))  # 4 messages, both take some
    platform.wait_until_done(ids, time.monotonic() + 60, "two workers")
    assert_captioned_exactly_once(platform, ids)
    by_worker = {b.worker for b in platform.logged_batches() if set(b.ids) & set(ids)}
    assert by_worker == {"alpha", "beta"}


def test_a_worker_killed_mid_batch_hands_its_claims_back(platform):
    victim = platform.worker("beta")
    platform.worker("alpha")
    ids = accepted_batch(platform, "killed-worker", real_photos(48, start=216))
    # More images processing than one worker claims at a time (IMGCAP_MICRO_BATCH_MAX, 16): both
    # workers hold a micro-batch, so the victim dies holding claims.
    held = wait_for(
        lambda: (found := processing(platform, ids)) and len(found) > 16 and found, 30, "two claims"
    )
    victim.kill()
    killed = time.monotonic()

    done = platform.wait_until_done(ids, killed + FAULT_BOUND_S, "after the worker was killed")
    states = platform.images(ids)
    again = {i for i, state in states.items() if state.attempts == 2}
    assert again and again <= held, (again, held)  # the victim's claims, claimed a second time
    assert_captioned_exactly_once(platform, ids, attempts=dict.fromkeys(again, 2))
    print(
        f"worker killed: {len(again)} claims handed back, {len(ids)} images done {done - killed:.1f}s after"
    )
