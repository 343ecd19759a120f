"""Uploads and batches through captions.services, on real Postgres with real photos."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image as PILImage

from captions.ingest import RejectedInput
from captions.models import Batch, BatchItem, Image
from captions.services.files import delete_file_if_unused
from captions.services.images import delete_image, set_visibility
from captions.services.intake import (
    BatchRejected,
    IncomingFile,
    create_batch,
    create_batch_from_paths,
    upload_image,
)

pytestmark = pytest.mark.django_db


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_upload_stores_the_file_under_its_hash_and_queues_it_after_commit(
    user, photo, media_root, queued_ids, django_capture_on_commit_callbacks
):
    data = photo()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = upload_image(owner=user, file=IncomingFile("dog.jpg", data))
        assert queued_ids() == []  # nothing is sent before the transaction commits
    assert len(callbacks) == 1

    image = result.image
    sha = hashlib.sha256(data).hexdigest()
    assert result.created
    assert image.sha256 == sha
    assert image.file.name == f"images/{sha[:2]}/{sha}.jpg"
    assert (media_root / image.file.name).read_bytes() == data
    assert (image.status, image.visibility, image.original_name, image.format) == (
        "pending",
        "private",
        "dog.jpg",
        "JPEG",
    )
    assert (image.width, image.height) == PILImage.open(io.BytesIO(data)).size
    assert image.size == len(data)
    assert queued_ids() == [image.pk]


def test_the_same_bytes_from_the_same_owner_return_the_existing_image_without_queueing(
    user, other_user, photo, media_root, queued_ids, django_capture_on_commit_callbacks
):
    data = photo()
    first = upload_image(owner=user, file=IncomingFile("a.jpg", data)).image
    with django_capture_on_commit_callbacks(execute=True):
        again = upload_image(owner=user, file=IncomingFile("renamed.jpg", data))
    assert not again.created
    assert again.image.pk == first.pk
    assert queued_ids() == []
    assert Image.objects.count() == 1

    # Another owner gets an image of their own, sharing the stored file.
    theirs = upload_image(owner=other_user, file=IncomingFile("b.jpg", data))
    assert theirs.created and theirs.image.pk != first.pk
    assert theirs.image.file.name == first.file.name
    assert len(stored_files(media_root)) == 1


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"this is a text file, not a picture" * 10, 415),
    ],
    ids=["zero-bytes", "not-an-image"],
)
def test_bad_input_is_refused_and_stores_nothing(user, media_root, data, status):
    with pytest.raises(RejectedInput) as caught:
        upload_image(owner=user, file=IncomingFile("bad.jpg", data))
    assert caught.value.status == status
    assert caught.value.message
    assert Image.objects.count() == 0
    assert stored_files(media_root) == []


def test_a_truncated_jpeg_is_refused(user, photo, media_root):
    data = photo()
    with pytest.raises(RejectedInput):
        upload_image(owner=user, file=IncomingFile("cut.jpg", data[: len(data) // 2]))
    assert Image.objects.count() == 0
    assert stored_files(media_root) == []


def test_over_the_size_limit_is_413(user, photo, media_root, settings):
    data = photo()
    settings.IMGCAP_MAX_UPLOAD_BYTES = len(data) - 1
    with pytest.raises(RejectedInput) as caught:
        upload_image(owner=user, file=IncomingFile("big.jpg", data))
    assert caught.value.status == 413
    assert Image.objects.count() == 0


def test_a_batch_accepts_the_good_items_and_lists_the_rejected_ones(
    user, photo, media_root, queued_ids, django_capture_on_commit_callbacks
):
    good_a, good_b = photo(), photo()
    files = [
        IncomingFile("a.jpg", good_a),
        IncomingFile("empty.jpg", b""),
        IncomingFile("b.jpg", good_b),
        IncomingFile("notes.txt", b"hello there, no picture here"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        result = create_batch(owner=user, files=files, visibility="public")
    batch = result.batch
    items = list(BatchItem.objects.filter(batch=batch).order_by("position"))
    assert [i.name for i in items] == ["a.jpg", "b.jpg"]
    assert {i.image.visibility for i in items} == {"public"}
    assert [r["name"] for r in batch.rejected] == ["empty.jpg", "notes.txt"]
    assert all(r["code"] and r["message"] for r in batch.rejected)
    assert sorted(queued_ids()) == sorted(i.image_id for i in items)
    assert len(stored_files(media_root)) == 2


def test_a_folder_batch_is_queued_in_messages_of_batch_max_ids(
    user, photo, media_root, tmp_path, settings, broker_messages, django_capture_on_commit_callbacks
):
    settings.IMGCAP_MICRO_BATCH_MAX = 8
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i in range(20):
        paths.append(folder / f"{i:02}.jpg")
        paths[-1].write_bytes(photo())
    paths.append(folder / "notes.txt")
    paths[-1].write_text("no picture here")
    with django_capture_on_commit_callbacks(execute=True):
        result = create_batch_from_paths(owner=user, paths=paths, root=folder)
    ids = list(BatchItem.objects.filter(batch=result.batch).values_list("image_id", flat=True))
    assert len(ids) == 20 and [r["name"] for r in result.batch.rejected] == ["notes.txt"]
    messages = [m["args"][0] for m in broker_messages() if m["task"] == "imgcap.caption_images"]
    assert sorted(len(m) for m in messages) == [4, 8, 8]  # ceil(20 / 8) messages
    assert sorted(i for m in messages for i in m) == sorted(ids)


def test_a_batch_with_nothing_acceptable_stores_nothing(user, media_root):
    files = [IncomingFile("empty.jpg", b""), IncomingFile("x.txt", b"plain text " * 20)]
    with pytest.raises(BatchRejected) as caught:
        create_batch(owner=user, files=files)
    assert caught.value.code == "no_acceptable_images"
    assert [r.name for r in caught.value.rejected] == ["empty.jpg", "x.txt"]
    assert Batch.objects.count() == 0 and Image.objects.count() == 0
    assert stored_files(media_root) == []


def test_an_idempotency_key_returns_the_first_batch(
    user, photo, media_root, queued_ids, django_capture_on_commit_callbacks
):
    files = [IncomingFile("a.jpg", photo())]
    first = create_batch(owner=user, files=files, idempotency_key="key-1")
    with django_capture_on_commit_callbacks(execute=True):
        again = create_batch(owner=user, files=[IncomingFile("c.jpg", photo())], idempotency_key="key-1")
    assert again.replayed and not first.replayed
    assert again.batch.pk == first.batch.pk
    assert Image.objects.count() == 1
    assert queued_ids() == []


def test_a_batch_from_a_zip_archive(user, photo, media_root):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("holiday/one.jpg", photo())
        archive.writestr("holiday/two.jpg", photo())
    result = create_batch(owner=user, archives=[IncomingFile("photos.zip", buffer.getvalue())])
    assert sorted(i.name for i in result.batch.items.all()) == ["one.jpg", "two.jpg"]
    assert Image.objects.filter(owner=user).count() == 2


def test_a_bad_archive_refuses_the_whole_batch(user, media_root):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escape.jpg", b"whatever")
    with pytest.raises(RejectedInput) as caught:
        create_batch(owner=user, archives=[IncomingFile("evil.zip", buffer.getvalue())])
    assert 400 <= caught.value.status < 500
    assert Batch.objects.count() == 0
    assert stored_files(media_root) == []


def test_too_many_files_in_a_batch(user, photo, settings, media_root):
    settings.IMGCAP_MAX_BATCH_FILES = 2
    files = [IncomingFile(f"{i}.jpg", photo()) for i in range(3)]
    with pytest.raises(RejectedInput) as caught:
        create_batch(owner=user, files=files)
    assert caught.value.code == "too_many_files"
    assert Image.objects.count() == 0


def test_delete_removes_the_file_only_when_no_other_image_uses_it(user, other_user, photo, media_root):
    data = photo()
    mine = upload_image(owner=user, file=IncomingFile("a.jpg", data)).image
    theirs = upload_image(owner=other_user, file=IncomingFile("b.jpg", data)).image
    path = media_root / mine.file.name

    delete_image(image=mine)
    assert path.exists()  # bob's image still uses the bytes
    # on_commit does not run inside the test transaction; call what it runs
    delete_file_if_unused(mine.file.name)
    assert path.exists()
    delete_image(image=theirs)
    delete_file_if_unused(theirs.file.name)
    assert not path.exists()
    assert Image.objects.count() == 0


def test_delete_runs_its_file_cleanup_on_commit(user, photo, media_root, django_capture_on_commit_callbacks):
    image = upload_image(owner=user, file=IncomingFile("a.jpg", photo())).image
    path = media_root / image.file.name
    with django_capture_on_commit_callbacks(execute=True):
        delete_image(image=image)
    assert not path.exists()


def test_set_visibility_checks_its_value(user, photo, media_root):
    image = upload_image(owner=user, file=IncomingFile("a.jpg", photo())).image
    set_visibility(image=image, visibility="public")
    image.refresh_from_db()
    assert image.visibility == "public"
    with pytest.raises(RejectedInput):
        set_visibility(image=image, visibility="secret")


@pytest.mark.django_db(transaction=True)
def test_a_batch_racing_another_upload_of_the_same_bytes_keeps_theirs(user, photo, media_root, queued_ids):
    """Another request stores the same bytes between the batch's lookup and its insert: the batch waits
    for it on the unique index, then takes that image as a duplicate item instead of failing."""
    import threading
    import time

    from django.db import connection, transaction

    theirs, ours = photo(), photo()
    inserted, done = threading.Event(), threading.Event()
    other: dict[str, int] = {}

    def other_request() -> None:
        try:
            with transaction.atomic():
                other["id"] = upload_image(owner=user, file=IncomingFile("theirs.jpg", theirs)).image.pk
                inserted.set()
                time.sleep(1.0)  # long enough for the batch below to block on our uncommitted row
        finally:
            done.set()
            connection.close()

    thread = threading.Thread(target=other_request)
    thread.start()
    try:
        assert inserted.wait(10)
        result = create_batch(owner=user, files=[IncomingFile("a.jpg", theirs), IncomingFile("b.jpg", ours)])
    finally:
        thread.join()
    assert done.is_set()

    items = list(BatchItem.objects.filter(batch=result.batch).order_by("position"))
    assert [(i.name, i.image_id == other["id"], i.duplicate) for i in items] == [
        ("a.jpg", True, True),
        ("b.jpg", False, False),
    ]
    assert Image.objects.filter(owner=user).count() == 2
    assert items[1].image_id in queued_ids() and queued_ids().count(other["id"]) == 1  # never queued twice


def test_bidirectional_controls_never_reach_a_stored_name(user, photo, media_root):
    result = upload_image(owner=user, file=IncomingFile("holiday\u202egpj.exe", photo()))
    assert result.image.original_name == "holidaygpj.exe"
