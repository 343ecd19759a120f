"""The command-line uploader without a server: which files it finds, how it reads its options."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imgcap_client.cli import parse_args
from imgcap_client.scan import find_images, is_image_name, sha256_of


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" + name.encode())


def test_scan_finds_images_in_subfolders_and_passes_over_junk(tmp_path):
    touch(
        tmp_path,
        "a.jpg",
        "B.JPEG",
        "c.png",
        "notes.txt",
        "no_extension",
        ".DS_Store",
        "Thumbs.db",
        "desktop.ini",
        "._a.jpg",
        ".hidden.jpg",
        "trip/d.webp",
        "trip/2019/e.HEIC",
        "trip/2019/f.tiff",
        "trip/._d.webp",
        "__MACOSX/trip/d.webp",
        ".git/objects/x.png",
    )
    scan = find_images([tmp_path])
    found = [str(p.relative_to(tmp_path)) for p in scan.files]
    assert found == ["B.JPEG", "a.jpg", "c.png", "trip/d.webp", "trip/2019/e.HEIC", "trip/2019/f.tiff"]
    # notes.txt, no_extension, .DS_Store, Thumbs.db, desktop.ini, ._a.jpg, .hidden.jpg, trip/._d.webp,
    # and the files of __MACOSX/ and .git/.
    assert scan.ignored == 10
    assert scan.missing == []


def test_no_recursive_stays_in_the_folder_and_paths_given_twice_count_once(tmp_path):
    touch(tmp_path, "a.jpg", "sub/b.jpg")
    scan = find_images([tmp_path, tmp_path / "a.jpg", tmp_path / "missing"], recursive=False)
    assert scan.files == [tmp_path / "a.jpg"]
    assert scan.missing == [tmp_path / "missing"]
    assert find_images([tmp_path / "sub" / "b.jpg"]).files == [tmp_path / "sub" / "b.jpg"]


def test_links_to_folders_are_not_followed(tmp_path):
    touch(tmp_path, "photos/a.jpg")
    os.symlink(tmp_path / "photos", tmp_path / "photos" / "loop")  # a loop, if it were followed
    assert find_images([tmp_path]).files == [tmp_path / "photos" / "a.jpg"]


def test_image_names_and_hashes():
    assert is_image_name("IMG_0001.JPG") and is_image_name("x.heif") and is_image_name("scan.tif")
    assert not any(is_image_name(n) for n in ["._IMG_0001.JPG", "a.jpg.txt", "movie.mp4", "Thumbs.db"])


def test_sha256_of_a_file_is_that_of_its_bytes(tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom(3 * 2**20 + 17)  # more than one read
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_options_and_their_defaults(monkeypatch):
    monkeypatch.delenv("IMGCAP_SERVER", raising=False)
    monkeypatch.delenv("IMGCAP_TOKEN", raising=False)
    args = parse_args(["upload", "photos", "more", "--server", "http://h:8000", "--token", "t"])
    assert args.paths == [Path("photos"), Path("more")]
    assert (args.server, args.token, args.recursive, args.visibility) == (
        "http://h:8000",
        "t",
        True,
        "private",
    )
    assert (args.concurrency, args.album, args.dry_run, args.quiet) == (4, None, False, False)

    args = parse_args(
        ["upload", "p", "--server=s", "--token=t", "--no-recursive", "--visibility", "public"]
        + ["--concurrency", "8", "--album", "Summer", "--dry-run", "--quiet"]
    )
    assert (args.recursive, args.visibility, args.concurrency) == (False, "public", 8)
    assert (args.album, args.dry_run, args.quiet) == ("Summer", True, True)


def test_server_and_token_from_the_environment_and_upload_word_optional(monkeypatch):
    monkeypatch.setenv("IMGCAP_SERVER", "http://env:8000")
    monkeypatch.setenv("IMGCAP_TOKEN", "from-env")
    args = parse_args(["photos"])  # as the console script reads: imgcap-upload photos
    assert (args.command, args.paths, args.server, args.token) == (
        "upload",
        [Path("photos")],
        "http://env:8000",
        "from-env",
    )
    assert parse_args(["upload", "p", "--token", "flag"]).token == "flag"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["upload", "p", "--token", "t"], "--server URL"),
        (["upload", "p", "--server", "s"], "--token TOKEN"),
        (["upload", "--server", "s", "--token", "t"], "required: DIR"),
        (["upload", "p", "--server", "s", "--token", "t", "--visibility", "everyone"], "invalid choice"),
        (["upload", "p", "--server", "s", "--token", "t", "--concurrency", "0"], "between 1 and 32"),
        (["upload", "p", "--server", "s", "--token", "t", "--concurrency", "many"], "whole number"),
    ],
)
def test_usage_errors_exit_2_saying_what_is_wrong(monkeypatch, capsys, argv, says):
    monkeypatch.delenv("IMGCAP_SERVER", raising=False)
    monkeypatch.delenv("IMGCAP_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    import io

    from imgcap_client.progress import Progress

    terminal = io.StringIO()
    bar = Progress(terminal, tty=True)
    bar.start("uploading", 2)
    bar.step("uploaded", "a.jpg", size=2**20)
    bar.step("failed", "b.jpg", "b.jpg: not an image (not_an_image)")
    bar.finish()
    drawn = terminal.getvalue()
    assert "uploading [------------------------] 0/2" in drawn
    assert "uploading [########################] 2/2  uploaded 1, already 0, failed 1" in drawn
    # A failure is a line that stays, printed over the bar; the bar is redrawn in place ("\r", clear).
    assert "\r\x1b[Kfailed: b.jpg: b.jpg: not an image (not_an_image)\n" in drawn
    assert "uploaded: a.jpg" not in drawn and drawn.endswith("\r\x1b[K")

    log = io.StringIO()
    lines = Progress(log, tty=False)
    lines.start("uploading", 2)
    lines.step("uploaded", "a.jpg")
    lines.step("already", "c.jpg")
    assert log.getvalue() == "uploading 2 files...\nuploaded: a.jpg\nalready on the server: c.jpg\n"

    quiet = io.StringIO()
    silent = Progress(quiet, quiet=True, tty=True)
    silent.start("uploading", 1)
    silent.step("failed", "x.jpg", "no")
    silent.finish()
    assert quiet.getvalue() == ""
