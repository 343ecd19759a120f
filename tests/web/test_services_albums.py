"""Albums (captions/services/albums.py) on the real database: names, membership, share links."""

from __future__ import annotations

import pytest

from captions.ingest import RejectedInput
from captions.models import Album, AlbumItem, Image
from captions.services import albums
from captions.services.images import delete_image
from captions.services.intake import IncomingFile, upload_image

pytestmark = pytest.mark.django_db


def uploads(owner, photo, count: int) -> list[Image]:
    return [upload_image(owner=owner, file=IncomingFile(f"p{i}.jpg", photo())).image for i in range(count)]


def test_names_are_cleaned_checked_and_unique_per_owner(user, other_user):
    album = albums.create_album(owner=user, name="  Lisbon,   day 2 ")
    assert album.name == "Lisbon, day 2"
    for bad, code in [("   ", "empty_album_name"), ("x" * 201, "album_name_too_long")]:
        with pytest.raises(RejectedInput) as refused:
            albums.create_album(owner=user, name=bad)
        assert refused.value.code == code and refused.value.status == 400
    with pytest.raises(RejectedInput) as taken:
        albums.create_album(owner=user, name="Lisbon, day 2")
    assert taken.value.code == "album_name_taken" and taken.value.status == 409
    # Another owner may use the same name; get_or_create finds the existing one.
    assert albums.create_album(owner=other_user, name="Lisbon, day 2").pk != album.pk
    assert albums.get_or_create_album(owner=user, name="Lisbon, day 2") == (album, False)
    made, created = albums.get_or_create_album(owner=user, name="Porto")
    assert created and made.owner == user
    with pytest.raises(RejectedInput):
        albums.update_album(album=made, name="Lisbon, day 2")  # renaming onto a taken name
    assert Album.objects.get(pk=made.pk).name == "Porto"


def test_images_join_once_only_the_owners_and_outlive_the_album(user, other_user, photo, media_root):
    mine = uploads(user, photo, 3)
    theirs = uploads(other_user, photo, 1)
    album = albums.create_album(owner=user, name="Trip")
    assert albums.add_images(album=album, images=mine[:2] + theirs) == 2  # not another owner's image
    assert albums.add_images(album=album, images=mine) == 1  # the two already in it are skipped
    assert sorted(album.images.values_list("pk", flat=True)) == sorted(im.pk for im in mine)
    assert albums.remove_images(album=album, images=[mine[0]]) == 1
    assert albums.remove_images(album=album, images=[mine[0]]) == 0
    delete_image(image=mine[1])  # a deleted image leaves its albums
    assert list(album.images.values_list("pk", flat=True)) == [mine[2].pk]
    albums.delete_album(album=album)
    assert not AlbumItem.objects.exists() and Image.objects.filter(pk=mine[2].pk).exists()


def test_a_share_link_is_unguessable_stable_and_revocable(user):
    album = albums.create_album(owner=user, name="Shared")
    assert album.share_token is None
    token = albums.share_album(album=album).share_token
    assert token and len(token) >= 32 and album.shared_at is not None
    assert albums.share_album(album=album).share_token == token  # sharing again keeps the link
    albums.revoke_share(album=album)
    assert Album.objects.get(pk=album.pk).share_token is None
    assert albums.share_album(album=album).share_token not in (None, token)  # a new link, not the old one
