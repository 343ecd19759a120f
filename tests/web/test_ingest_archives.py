"""extract_archive on real ZIPs: good ones with clutter, and every kind of hostile one, built here."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from captions.ingest import RejectedInput, extract_archive, inspect_image, safe_member_name

FLICKR_IMAGES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "flickr8k" / "images"
MIB = 2**20
# The platform's defaults (contract): 500 files, 512 MiB unpacked, ratio 100, 20 MiB per image.
DEFAULTS = dict(max_files=500, max_total_bytes=512 * MIB, max_ratio=100, max_member_bytes=20 * MIB)
GENEROUS = dict(max_files=500, max_total_bytes=4096 * MIB, max_ratio=1e9, max_member_bytes=4096 * MIB)


def photos(n: int) -> list[bytes]:
    if not FLICKR_IMAGES.is_dir():
        pytest.skip(f"real photos not found at {FLICKR_IMAGES}")
    return [p.read_bytes() for p in sorted(FLICKR_IMAGES.glob("*.jpg"))[:n]]


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buf.getvalue()


def zip_of_zeros(size: int, name: str = "zeros.bmp") -> bytes:
    """One member of `size` zero bytes, written in 1 MiB chunks (a 200 MB member makes a ~200 KB zip)."""
    buf = io.BytesIO()
    chunk = bytes(MIB)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w") as member:
        for _ in range(size // MIB):
            member.write(chunk)
        member.write(bytes(size % MIB))
    return buf.getvalue()


def patch_headers(data: bytes, *, offset_local: int, offset_central: int, fmt: str, value: int) -> bytes:
    """Overwrite one field in every local header and central-directory entry (for lying archives)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        start = out.find(signature)
        while start != -1:
            struct.pack_into(fmt, out, start + offset, value)
            start = out.find(signature, start + 4)
    return bytes(out)


def rejected(data: bytes, **limits) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        extract_archive(data, **{**DEFAULTS, **limits}, name="archive.zip")
    return info.value


# --- accepted ---------------------------------------------------------------------------------


def test_real_photos_come_back_with_base_names_and_clutter_skipped():
    first, second, third = photos(3)
    data = make_zip(
        [
            ("holiday/", b""),
            ("holiday/beach.jpg", first),
            ("holiday/day 2/sunset.JPG", second),
            ("top.jpg", third),
            ("__MACOSX/holiday/._beach.jpg", b"\x00\x05\x16\x07 apple double"),
            ("holiday/.DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("holiday/Thumbs.db", b"\xd0\xcf\x11\xe0"),
            ("._top.jpg", b"\x00\x05\x16\x07"),
        ]
    )
    members = extract_archive(data, **DEFAULTS)
    assert members == [("beach.jpg", first), ("sunset.JPG", second), ("top.jpg", third)]
    for name, content in members:
        assert inspect_image(content, max_bytes=20 * MIB, max_pixels=40_000_000, name=name).format == "JPEG"


def test_stored_and_deflated_members_both_work():
    (photo,) = photos(1)
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        assert extract_archive(make_zip([("a.jpg", photo)], compression), **DEFAULTS) == [("a.jpg", photo)]


def test_exactly_max_files_is_fine():
    data = make_zip([(f"{i}.jpg", b"x") for i in range(5)])
    assert len(extract_archive(data, **{**DEFAULTS, "max_files": 5})) == 5


def test_a_flat_image_just_under_a_mebibyte_is_not_called_a_bomb():
    # One-colour pictures compress enormously; below RATIO_FLOOR_BYTES the ratio is not held against them.
    data = make_zip([("white.bmp", b"\xff" * (MIB - 1))])
    assert extract_archive(data, **DEFAULTS)[0][0] == "white.bmp"


def test_safe_member_name():
    assert safe_member_name("a/b/c.jpg") == "c.jpg"
    assert safe_member_name("tab\there.jpg") == "tabhere.jpg"
    assert safe_member_name("folder/") == "folder"
    long_name = "x" * 300 + ".jpeg"
    assert safe_member_name(long_name) == "x" * 195 + ".jpeg"  # 200 characters, extension kept
    assert safe_member_name("\x01") == "file"
    # A right-to-left override shows "invoice\u202egpj.exe" as "invoiceexe.jpg": the controls go.
    assert safe_member_name("invoice\u202egpj.exe") == "invoicegpj.exe"
    assert safe_member_name("a\u2066b\u2069\u200fc\x85.jpg") == "abc.jpg"


# --- not a usable ZIP -------------------------------------------------------------------------


def test_not_a_zip():
    error = rejected(b"hello, these are not the bytes you are looking for" * 10)
    assert (error.code, error.status) == ("archive_invalid", 415)
    assert "only ZIP archives" in error.message


def test_a_tar_gz_is_named():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("a.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    error = rejected(buf.getvalue())
    assert (error.code, error.status) == ("archive_invalid", 415)
    assert "gzip" in error.message


def test_damaged_zip():
    data = make_zip([("a.jpg", b"a" * 1000)])
    error = rejected(data[: len(data) - 30])  # the end of the central directory is gone
    assert (error.code, error.status) == ("archive_invalid", 422)


def test_empty_zip_and_clutter_only_zip():
    assert rejected(make_zip([])).code == "archive_empty"
    assert rejected(make_zip([("__MACOSX/._a.jpg", b"x"), ("dir/", b"")])).code == "archive_empty"
    assert rejected(b"").code == "archive_invalid"


# --- refused as a whole -----------------------------------------------------------------------


def test_too_many_files():
    data = make_zip([(f"{i}.jpg", b"x") for i in range(6)])
    error = rejected(data, max_files=5)
    assert (error.code, error.status) == ("archive_too_many_files", 413)
    assert error.message == "archive.zip: holds 6 files; the limit is 5"


def test_too_many_entries_of_any_kind():
    # Directory entries cost work too: a bounded multiple of max_files is the most we look at.
    data = make_zip([(f"d{i}/", b"") for i in range(100)] + [("a.jpg", b"x")])
    assert rejected(data, max_files=5).code == "archive_too_many_files"


@pytest.mark.parametrize("name", ["inner.zip", "photos.tar.gz", "x.7z", "y.RAR", "z.tgz", "w.xz", "v.bz2"])
def test_nested_archive_by_name(name):
    error = rejected(make_zip([("ok.jpg", b"x"), (f"sub/{name}", b"not even an archive inside")]))
    assert (error.code, error.status) == ("archive_nested", 422)
    assert name in error.message


def nested_payloads() -> dict[str, bytes]:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("a.jpg")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"a"))
    return {
        "zip": make_zip([("a.jpg", b"a")]),
        "gzip": gzip.compress(b"a" * 100),
        "tar": tar.getvalue(),
        "7z": b"7z\xbc\xaf\x27\x1c" + bytes(30),
        "rar": b"Rar!\x1a\x07\x01\x00" + bytes(30),
    }


@pytest.mark.parametrize("kind", ["zip", "gzip", "tar", "7z", "rar"])
def test_nested_archive_by_content_under_an_image_name(kind):
    error = rejected(make_zip([("ok.jpg", b"x"), ("innocent.jpg", nested_payloads()[kind])]))
    assert (error.code, error.status) == ("archive_nested", 422)
    assert "innocent.jpg" in error.message


@pytest.mark.parametrize(
    "name",
    [
        "/etc/cron.d/evil.jpg",
        "../evil.jpg",
        "photos/../../evil.jpg",
        "photos\\..\\evil.jpg",
        "C:/evil.jpg",
        "D:evil.jpg",
    ],
)
def test_path_tricks(name):
    data = make_zip([("fine.jpg", b"x"), (zipfile.ZipInfo(name), b"x")])
    assert extract_archive(make_zip([("fine.jpg", b"x")]), **DEFAULTS)  # the same archive without the trick
    assert zipfile.ZipFile(io.BytesIO(data)).namelist()[1] == name  # the trick really is in the archive
    error = rejected(data)
    assert (error.code, error.status) == ("archive_unsafe_path", 422)
    assert repr(name) in error.message


def test_symlink_entry():
    link = zipfile.ZipInfo("photo.jpg")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    error = rejected(make_zip([(link, b"/etc/passwd")]))
    assert (error.code, error.status) == ("archive_unsafe_path", 422)
    assert "symbolic link" in error.message
    regular = zipfile.ZipInfo("photo.jpg")
    regular.create_system = 3
    regular.external_attr = (stat.S_IFREG | 0o644) << 16
    assert extract_archive(make_zip([(regular, b"x")]), **DEFAULTS) == [("photo.jpg", b"x")]


def test_encrypted_entry():
    # zipfile cannot encrypt; set the "encrypted" flag bit in the headers as an encrypting tool would.
    plain = make_zip([("a.jpg", b"secret" * 100)])
    data = patch_headers(plain, offset_local=6, offset_central=8, fmt="<H", value=0x1)
    error = rejected(data)
    assert (error.code, error.status) == ("archive_encrypted", 422)


def test_member_over_max_member_bytes():
    data = make_zip([("small.jpg", b"x"), ("big.bmp", bytes(300_000))], zipfile.ZIP_STORED)
    error = rejected(data, max_member_bytes=200_000)
    assert (error.code, error.status) == ("archive_member_too_large", 413)
    assert "big.bmp" in error.message


def test_sizes_just_over_a_limit_are_told_apart():
    data = make_zip([("big.bmp", bytes(200_001))], zipfile.ZIP_STORED)
    member = rejected(data, max_member_bytes=200_000).message
    assert member.endswith("is 200,001 bytes; the limit per file is 200,000 bytes (195.3 KiB)")
    total = rejected(data, max_total_bytes=200_000).message
    assert total.endswith("unpacks to at least 200,001 bytes; the limit is 200,000 bytes (195.3 KiB)")


def test_total_over_max_total_bytes_from_the_headers():
    data = make_zip([(f"{i}.bmp", bytes(100_000)) for i in range(3)], zipfile.ZIP_STORED)
    error = rejected(data, max_total_bytes=250_000)
    assert (error.code, error.status) == ("archive_too_large", 413)
    assert extract_archive(data, **{**DEFAULTS, "max_total_bytes": 300_000})


def test_headers_that_understate_the_size_do_not_get_more_bytes_through():
    # 2 MiB of zeros whose headers claim 1,000 bytes: the reader must not return anything.
    honest = zip_of_zeros(2 * MIB)
    lying = patch_headers(honest, offset_local=22, offset_central=24, fmt="<I", value=1_000)
    assert zipfile.ZipFile(io.BytesIO(lying)).infolist()[0].file_size == 1_000
    error = rejected(lying, **GENEROUS)
    assert (error.code, error.status) == ("archive_invalid", 422)


def test_zip_bomb_200_mb_of_zeros():
    data = zip_of_zeros(200 * MIB)
    assert len(data) < 400_000
    error = rejected(data, **{**GENEROUS, "max_ratio": 100})  # only the ratio can stop it here
    assert (error.code, error.status) == ("archive_bomb", 413)
    assert "zeros.bmp" in error.message
    assert rejected(data).status == 413  # and with the platform's defaults, one way or another


def test_whole_archive_ratio_catches_many_small_bombs():
    # Ten members each under the per-member floor; together 9 MB from a few KB.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(10):
            archive.writestr(f"{i}.bmp", bytes(900_000))
    error = rejected(buf.getvalue(), **{**GENEROUS, "max_ratio": 100})
    assert (error.code, error.status) == ("archive_bomb", 413)
    assert "expands" in error.message


def test_overlapping_entries_bomb():
    # The "better zip bomb" trick: many central-directory entries pointing at the same compressed data.
    one = zip_of_zeros(2 * MIB, name="k0.bmp")
    cd_start = one.index(b"PK\x01\x02")
    eocd_start = one.index(b"PK\x05\x06")
    entry = one[cd_start:eocd_start]
    entries = b"".join(entry.replace(b"k0.bmp", f"k{i}.bmp".encode()) for i in range(10))
    eocd = bytearray(one[eocd_start:])
    struct.pack_into("<HHI", eocd, 8, 10, 10, len(entries))  # entry counts and central-directory size
    data = one[:cd_start] + entries + bytes(eocd)
    assert len(zipfile.ZipFile(io.BytesIO(data)).infolist()) == 10
    error = rejected(data, **GENEROUS)
    assert (error.code, error.status) == ("archive_bomb", 413)
    assert "overlap" in error.message
