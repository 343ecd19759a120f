"""A photo's metadata in and out (captions/metadata.py), on real files written by Pillow and pyexiv2, and
at intake: a description the file carried becomes the shown caption (source `metadata`) before any
model ran, and the date taken and camera reach the API."""

from __future__ import annotations

import datetime
import io
import xml.etree.ElementTree as ET

import numpy as np
import pyexiv2
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from captions.metadata import (
    CAPTION_IN_FILE_FORMATS,
    MAX_DESCRIPTION_CHARS,
    PhotoMetadata,
    camera_name,
    clean_description,
    embed_caption,
    parse_exif_datetime,
    parse_exif_offset,
    read_photo_metadata,
    xmp_sidecar,
)
from ml.images import register_heif

register_heif()

IMAGES = "/api/v1/images/"
# Formats exiv2 writes, and those it cannot (HEIC: read only; GIF and BMP hold no metadata).
WRITABLE = ("JPEG", "PNG", "WEBP", "TIFF")
READ_ONLY = ("HEIF", "GIF", "BMP")


def picture(fmt: str = "JPEG", *, seed: int = 0, size: tuple[int, int] = (48, 32)) -> bytes:
    """A small noisy picture (so that a re-encode would show in its pixels) in `fmt`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    options = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "HEIF":
        options = {"quality": 80, "enc_params": {"preset": "ultrafast"}}
    PILImage.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def with_metadata(
    data: bytes, *, exif: dict | None = None, iptc: dict | None = None, xmp: dict | None = None
):
    """`data` with these tags written by pyexiv2 (as a camera or an editor would have)."""
    image = pyexiv2.ImageData(data)
    try:
        if exif:
            image.modify_exif(exif)
        if iptc:
            image.modify_iptc(iptc)
        if xmp:
            image.modify_xmp(xmp)
        return image.get_bytes()
    finally:
        image.close()


def tags_of(data: bytes) -> tuple[dict, dict, dict]:
    image = pyexiv2.ImageData(data)
    try:
        return image.read_exif(), image.read_iptc(), image.read_xmp()
    finally:
        image.close()


def pixels(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def xmp_description(text: str) -> dict:
    return {"Xmp.dc.description": {'lang="x-default"': text}}


CAMERA = {
    "Exif.Image.Make": "Apple",
    "Exif.Image.Model": "iPhone 13",
    "Exif.Photo.DateTimeOriginal": "2023:05:01 10:11:12",
    "Exif.Photo.OffsetTimeOriginal": "+02:00",
    "Exif.Image.Orientation": "1",
}


# --- reading ---------------------------------------------------------------------------------------


def test_the_date_taken_camera_and_description_are_read_xmp_first():
    data = with_metadata(
        picture(),
        exif={**CAMERA, "Exif.Image.ImageDescription": "from exif"},
        iptc={"Iptc.Application2.Caption": "from iptc"},
        xmp=xmp_description("Two dogs on the beach at Cascais"),
    )
    found = read_photo_metadata(data)
    assert found == PhotoMetadata(
        taken_at=datetime.datetime(
            2023, 5, 1, 10, 11, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        ),
        taken_offset=120,
        camera="Apple iPhone 13",
        description="Two dogs on the beach at Cascais",
        orientation=1,
    )


def test_iptc_then_exif_when_the_sources_before_them_say_nothing():
    both = with_metadata(
        picture(),
        exif={"Exif.Image.ImageDescription": "from exif"},
        iptc={"Iptc.Application2.Caption": "A harbour at dusk"},
    )
    assert read_photo_metadata(both).description == "A harbour at dusk"
    exif_only = with_metadata(picture(), exif={"Exif.Image.ImageDescription": "Grandma's garden, 1998"})
    assert read_photo_metadata(exif_only).description == "Grandma's garden, 1998"


@pytest.mark.parametrize(
    "placeholder",
    [
        "OLYMPUS DIGITAL CAMERA",
        "SONY DSC",
        "DCIM",
        "default",
        "Exif_JPEG_PICTURE",
        "   ",
        "...",
        "sony dsc  ",
    ],
)
def test_a_cameras_placeholder_is_no_description_and_the_next_source_is_read(placeholder):
    alone = with_metadata(picture(), exif={"Exif.Image.ImageDescription": placeholder})
    assert read_photo_metadata(alone).description == ""
    under_xmp = with_metadata(
        picture(),
        exif={"Exif.Image.ImageDescription": "A red tram in Lisbon"},
        xmp=xmp_description(placeholder),
    )
    assert read_photo_metadata(under_xmp).description == "A red tram in Lisbon"


def test_the_cameras_own_name_is_no_description():
    data = with_metadata(
        picture(),
        exif={
            "Exif.Image.Make": "Canon",
            "Exif.Image.Model": "Canon EOS 5D",
            "Exif.Image.ImageDescription": "Canon",
        },
    )
    found = read_photo_metadata(data)
    assert found.description == "" and found.camera == "Canon EOS 5D"


def test_a_description_is_cleaned_and_capped():
    messy = with_metadata(picture(), iptc={"Iptc.Application2.Caption": "  A dog\x00\x01 on\tthe\n\nbeach  "})
    assert read_photo_metadata(messy).description == "A dog on the beach"
    long = with_metadata(picture(), xmp=xmp_description("word " * 600))
    assert len(read_photo_metadata(long).description) <= MAX_DESCRIPTION_CHARS
    assert clean_description(None) == "" and clean_description(["a", "b"]) == "a b"


def test_xmp_in_other_languages_only_reads_the_first():
    data = with_metadata(picture(), xmp={"Xmp.dc.description": {'lang="pt-PT"': "Um elétrico em Lisboa"}})
    assert read_photo_metadata(data).description == "Um elétrico em Lisboa"


@pytest.mark.parametrize(
    ("make", "model", "expected"),
    [
        ("Apple", "iPhone 13", "Apple iPhone 13"),
        ("Apple", "Apple iPhone 13", "Apple iPhone 13"),
        ("Canon", "Canon EOS 5D Mark IV", "Canon EOS 5D Mark IV"),
        ("NIKON CORPORATION", "NIKON D750", "NIKON D750"),
        ("  SONY ", "", "SONY"),
        ("", "ILCE-7M3", "ILCE-7M3"),
        (None, None, ""),
    ],
)
def test_the_camera_names_its_maker_once(make, model, expected):
    assert camera_name(make, model) == expected


def test_dates_with_an_offset_without_one_and_impossible_ones():
    utc = datetime.UTC
    assert parse_exif_datetime("2020:02:03 04:05:06") == datetime.datetime(2020, 2, 3, 4, 5, 6, tzinfo=utc)
    minus = parse_exif_datetime("2020:02:03 04:05:06", "-05:30")
    assert minus.utcoffset() == -datetime.timedelta(hours=5, minutes=30)
    assert parse_exif_datetime("2020:02:03 04:05:06", "nonsense").tzinfo == utc
    for bad in ("0000:00:00 00:00:00", "2020:02:30 10:00:00", "    :  :     :  :  ", "", None, "yesterday"):
        assert parse_exif_datetime(bad) is None
    data = with_metadata(picture(), exif={"Exif.Photo.DateTimeOriginal": "2021:13:45 99:00:00"})
    assert read_photo_metadata(data).taken_at is None


def test_the_cameras_offset_is_kept_in_minutes_and_only_when_it_wrote_one():
    assert [parse_exif_offset(v) for v in ("+02:00", "-0530", "+00:00", " +05:45 ")] == [120, -330, 0, 345]
    for bad in ("+15:00", "+02:75", "02:00", "Z", "", None, "nonsense"):
        assert parse_exif_offset(bad) is None, bad
    plain = with_metadata(picture(), exif={"Exif.Photo.DateTimeOriginal": "2020:02:03 04:05:06"})
    assert read_photo_metadata(plain).taken_offset is None  # read as UTC, but not known to be UTC
    # An offset without a date is no date taken.
    alone = with_metadata(picture(), exif={"Exif.Photo.OffsetTimeOriginal": "+02:00"})
    assert read_photo_metadata(alone) == PhotoMetadata()


def test_garbage_never_raises():
    jpeg = picture()
    # An Exif segment whose TIFF block is nonsense, inserted right after SOI.
    broken_exif = jpeg[:2] + b"\xff\xe1\x00\x14Exif\x00\x00MM\x00*\xff\xff\xff\xffgarbage" + jpeg[2:]
    for data in (
        b"",
        b"not an image at all",
        jpeg[:40],
        broken_exif,
        picture("PNG")[:60],
        bytes(range(256)) * 8,
    ):
        assert isinstance(read_photo_metadata(data), PhotoMetadata)
        assert embed_caption(data, "a caption") is None or isinstance(embed_caption(data, "a caption"), bytes)
    assert read_photo_metadata(b"") == PhotoMetadata()


def test_heic_metadata_is_read():
    exif = PILImage.Exif()
    exif[0x010F], exif[0x0110], exif[0x010E] = "Apple", "iPhone 15 Pro", "Sunset over the Tagus"
    out = io.BytesIO()
    PILImage.open(io.BytesIO(picture("PNG"))).save(
        out, "HEIF", quality=80, exif=exif.tobytes(), enc_params={"preset": "ultrafast"}
    )
    found = read_photo_metadata(out.getvalue())
    assert found.camera == "Apple iPhone 15 Pro" and found.description == "Sunset over the Tagus"


# --- writing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", WRITABLE)
def test_embedding_round_trips_keeps_other_tags_and_every_pixel(fmt):
    original = with_metadata(picture(fmt), exif=CAMERA, xmp={"Xmp.dc.creator": ["Ana"]})
    caption = 'A "red" tram & two <people> in Lisboa — é'
    embedded = embed_caption(original, caption)
    assert embedded is not None and embedded != original
    exif, _, xmp = tags_of(embedded)
    assert xmp["Xmp.dc.description"] == {'lang="x-default"': caption}
    assert exif["Exif.Image.ImageDescription"] == caption
    assert exif["Exif.Image.Make"] == "Apple" and exif["Exif.Photo.DateTimeOriginal"] == "2023:05:01 10:11:12"
    assert xmp["Xmp.dc.creator"] == ["Ana"]
    assert read_photo_metadata(embedded).description == caption
    np.testing.assert_array_equal(pixels(embedded), pixels(original))  # never re-encoded
    assert embed_caption(embedded, "replaced") is not None
    assert read_photo_metadata(embed_caption(embedded, "replaced")).description == "replaced"


def test_an_existing_iptc_caption_is_replaced_too_in_its_own_encoding():
    original = with_metadata(picture(), iptc={"Iptc.Application2.Caption": "old words"})
    _, iptc, _ = tags_of(embed_caption(original, "new words é"))
    assert iptc["Iptc.Application2.Caption"] == "new words é"
    assert "Iptc.Application2.Caption" not in tags_of(embed_caption(picture(), "none before"))[1]

    # An old camera's Latin-1 record: the caption in Latin-1 when it can be, else the old one goes.
    image = pyexiv2.ImageData(picture())
    image.modify_iptc(
        {"Iptc.Application2.Caption": "café", "Iptc.Application2.Keywords": ["mar"]}, encoding="latin-1"
    )
    latin = image.get_bytes()
    image.close()
    assert read_photo_metadata(latin).description == "café"

    def iptc_of(data: bytes) -> dict:
        found = pyexiv2.ImageData(data)
        try:
            return found.read_iptc(encoding="latin-1")
        finally:
            found.close()

    assert iptc_of(embed_caption(latin, "praça"))["Iptc.Application2.Caption"] == "praça"
    gone = iptc_of(embed_caption(latin, "Lisboa — 東京"))
    assert "Iptc.Application2.Caption" not in gone and gone["Iptc.Application2.Keywords"] == ["mar"]
    assert read_photo_metadata(embed_caption(latin, "Lisboa — 東京")).description == "Lisboa — 東京"


@pytest.mark.parametrize("fmt", READ_ONLY)
def test_formats_that_cannot_hold_a_caption_say_so(fmt):
    assert embed_caption(picture(fmt), "a caption") is None
    assert fmt not in CAPTION_IN_FILE_FORMATS and set(WRITABLE) == CAPTION_IN_FILE_FORMATS  # the page's list


def test_the_sidecar_is_a_valid_xmp_packet_with_the_caption():
    caption = 'Fish & chips <at> "Ana\'s" — é\x00'
    packet = xmp_sidecar(caption)
    root = ET.fromstring(packet)  # well-formed XML
    ns = {
        "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
        "dc": "http://purl.org/dc/elements/1.1/",
    }
    li = root.find("rdf:RDF/rdf:Description/dc:description/rdf:Alt/rdf:li", ns)
    assert li is not None and li.text.strip() == 'Fish & chips <at> "Ana\'s" — é'
    assert li.get("{http://www.w3.org/XML/1998/namespace}lang") == "x-default"
    sidecar = pyexiv2.ImageData(packet)  # exiv2 reads it as an XMP sidecar
    try:
        assert sidecar.read_xmp()["Xmp.dc.description"] == {'lang="x-default"': li.text}
    finally:
        sidecar.close()


# --- at intake -------------------------------------------------------------------------------------


def upload(client, data: bytes, name: str, **extra):
    return client.post(IMAGES, {"image": SimpleUploadedFile(name, data), **extra}, format="multipart")


@pytest.mark.django_db
def test_a_description_in_the_file_is_the_shown_caption_before_any_model_ran(api, media_root):
    data = with_metadata(picture(seed=3), exif=CAMERA, xmp=xmp_description("Our tent on the ridge"))
    answer = upload(api, data, "ridge.jpg")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["status"] == "pending" and body["candidates"] == []
    assert body["caption"]["source"] == "metadata" and body["caption"]["text"] == "Our tent on the ridge"
    assert body["caption"]["score"] is None and body["caption"]["model"] is None
    assert body["camera"] == "Apple iPhone 13"
    assert datetime.datetime.fromisoformat(body["taken_at"]) == datetime.datetime(
        2023, 5, 1, 8, 11, 12, tzinfo=datetime.UTC
    )
    assert body["taken_at"] == "2023-05-01T10:11:12+02:00"  # on the camera's clock, not the server's
    detail = api.get(f"{IMAGES}{body['id']}/").json()
    assert detail["caption"]["text"] == "Our tent on the ridge" and detail["taken_at"] == body["taken_at"]

    again = upload(api, data, "ridge-again.jpg").json()  # the same bytes: the same image, one caption
    assert again["duplicate"] is True and again["caption"]["source"] == "metadata"
    from captions.models import Caption

    assert Caption.objects.filter(image_id=body["id"], source="metadata").count() == 1


@pytest.mark.django_db
def test_the_description_outranks_the_model_and_a_person_outranks_both(
    api, user, media_root, model_version, save_captions
):
    from captions.models import Image
    from captions.services.embeddings import embed_shown_captions

    data = with_metadata(picture(seed=4), iptc={"Iptc.Application2.Caption": "Lighthouse at Cabo da Roca"})
    image_id = upload(api, data, "cabo.jpg").json()["id"]
    image = Image.objects.get(pk=image_id)
    save_captions(image, model_version, ["a white building by the sea", "a tower"])
    body = api.get(f"{IMAGES}{image_id}/").json()
    assert body["caption"]["source"] == "metadata" and body["caption"]["text"] == "Lighthouse at Cabo da Roca"
    assert [c["text"] for c in body["candidates"]] == ["a white building by the sea", "a tower"]

    # The search vector follows the shown caption: the worker's store kept it off the model's caption.
    image.refresh_from_db()
    assert image.embedded_caption_id is None or image.embedded_caption.source == "metadata"
    assert embed_shown_captions([image_id]) == 1
    image.refresh_from_db()
    assert image.embedded_caption.source == "metadata"

    export = api.get("/api/v1/export.jsonl", {"owner": "me"})
    rows = [line for line in b"".join(export.streaming_content).decode().splitlines() if line]
    assert len(rows) == 1 and '"source": "metadata"' in rows[0] and "Cabo da Roca" in rows[0]

    patched = api.patch(
        f"{IMAGES}{image_id}/", {"caption": "Cabo da Roca, the westernmost point"}, format="json"
    )
    assert patched.status_code == 200
    assert api.get(f"{IMAGES}{image_id}/").json()["caption"]["source"] == "human"


@pytest.mark.django_db
def test_a_placeholder_makes_no_caption_but_the_camera_is_kept(api, media_root):
    data = with_metadata(
        picture(seed=5),
        exif={
            "Exif.Image.Make": "OLYMPUS IMAGING CORP.",
            "Exif.Image.Model": "E-M10",
            "Exif.Image.ImageDescription": "OLYMPUS DIGITAL CAMERA",
        },
    )
    body = upload(api, data, "P1010001.JPG").json()
    assert (
        body["caption"] is None
        and body["camera"] == "OLYMPUS IMAGING CORP. E-M10"
        and body["taken_at"] is None
    )


@pytest.mark.django_db
def test_the_image_page_shows_the_description_the_date_and_the_camera(alice, api, media_root):
    data = with_metadata(picture(seed=6), exif=CAMERA, xmp=xmp_description("Breakfast in Porto"))
    image_id = upload(api, data, "porto.jpg").json()["id"]
    page = alice.get(f"/images/{image_id}/").content.decode()
    assert "Breakfast in Porto" in page and "From the photo's description" in page
    assert 'id="taken-at"' in page and "Apple iPhone 13" in page
    assert f'href="/api/v1/images/{image_id}/download/"' in page


@pytest.mark.django_db
def test_the_date_taken_is_shown_on_the_cameras_clock_whatever_the_servers_zone(
    alice, api, media_root, settings
):
    settings.TIME_ZONE = "America/New_York"  # the server's zone: 6 hours behind the camera here
    paris = upload(api, with_metadata(picture(seed=7), exif=CAMERA), "paris.jpg").json()
    plain = with_metadata(picture(seed=8), exif={"Exif.Photo.DateTimeOriginal": "2020:02:03 04:05:06"})
    unknown = upload(api, plain, "plain.jpg").json()
    assert paris["taken_at"] == "2023-05-01T10:11:12+02:00"
    assert unknown["taken_at"] == "2020-02-03T04:05:06Z"  # no offset written: read as UTC
    page = alice.get(f"/images/{paris['id']}/").content.decode()
    assert '<time datetime="2023-05-01T10:11:12+02:00">2023-05-01 10:11</time>' in page
    assert "UTC+02:00" in page
    page = alice.get(f"/images/{unknown['id']}/").content.decode()
    assert '<time datetime="2020-02-03T04:05:06+00:00">2020-02-03 04:05</time>' in page
    assert "UTC+" not in page


@pytest.mark.django_db
def test_the_worker_captions_a_described_photo_and_its_search_vector_is_the_description(
    settings, tiny_run, tiny_captioner, user, media_root
):
    from captions.models import Image
    from captions.selectors import choose_captions, with_captions
    from captions.services.intake import IncomingFile, upload_image
    from worker import micro_batches

    settings.IMGCAP_MODEL_DIR = str(tiny_run)
    settings.IMGCAP_MICRO_BATCH_WAIT_MS = 0
    data = with_metadata(picture(seed=7, size=(96, 64)), xmp=xmp_description("A kite over Guincho beach"))
    image = upload_image(owner=user, file=IncomingFile("kite.jpg", data)).image
    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert report.done == [image.pk]

    image = with_captions(Image.objects.filter(pk=image.pk)).get()
    choice = choose_captions(image)
    assert choice.best.source == "metadata" and choice.best.text == "A kite over Guincho beach"
    assert choice.candidates and choice.candidates[0].source == "model"  # captioned as usual
    assert image.embedded_caption_id == choice.best.pk
