"""`python -m imgcap_client upload DIR... --server URL --token TOKEN` (or `imgcap-upload DIR...`).

Exit status: 0 when nothing failed, 1 when some file failed, 2 for a usage error, a server that
cannot be reached, or a refused token.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from imgcap_client import __version__
from imgcap_client.api import Client
from imgcap_client.progress import Progress
from imgcap_client.scan import IMAGE_EXTENSIONS, find_images
from imgcap_client.upload import (
    FatalError,
    FileResult,
    Report,
    add_to_album,
    check_server,
    find_album,
    hash_files,
    known_digests,
    upload_files,
)

OK, SOME_FAILED, USAGE = 0, 1, 2
MAX_CONCURRENCY = 32


def _program() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m imgcap_client" if name in ("", "__main__.py", "-c") else name


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    return _parsers(prog)[0]


def _parsers(prog: str | None = None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The program's parser and its `upload` command's (which reports that command's usage errors)."""
    parser = argparse.ArgumentParser(
        prog=prog or _program(),
        description="Upload folders of photos to an imgcap server (its REST API), skipping what it has.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    upload = commands.add_parser(
        "upload",
        help="upload the photos of folders into one batch",
        description=(
            "Upload the photos of DIR (and its subfolders) into one batch. Files the server already has "
            "(by SHA-256) are skipped, so an interrupted run can simply be run again. Images by name: "
            + ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
            + "; hidden files and OS clutter (.DS_Store, Thumbs.db, ._*, __MACOSX) are passed over."
        ),
    )
    upload.add_argument("paths", nargs="+", type=Path, metavar="DIR", help="folders (or single files)")
    upload.add_argument(
        "--server",
        default=os.environ.get("IMGCAP_SERVER"),
        metavar="URL",
        help="e.g. http://127.0.0.1:8000 (env IMGCAP_SERVER)",
    )
    upload.add_argument(
        "--token",
        default=os.environ.get("IMGCAP_TOKEN"),
        metavar="TOKEN",
        help="your API token (env IMGCAP_TOKEN)",
    )
    upload.add_argument(
        "--recursive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="look in subfolders too (default: yes)",
    )
    upload.add_argument("--visibility", choices=["private", "public"], default="private")
    upload.add_argument(
        "--concurrency", type=_concurrency, default=4, metavar="N", help="uploads at once (4)"
    )
    upload.add_argument(
        "--album",
        metavar="NAME",
        help="put the photos in this album of yours, made if you have none of that name (files already "
        "on the server too)",
    )
    upload.add_argument("--dry-run", action="store_true", help="list what would be uploaded, send nothing")
    upload.add_argument("--quiet", action="store_true", help="no progress; only failures and the summary")
    return parser, upload


def _concurrency(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number; got {value!r}") from None
    if not 1 <= n <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CONCURRENCY}; got {n}")
    return n


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked (argparse exits with status 2 on a usage error). `upload` may be left out,
    so that the console script reads `imgcap-upload DIR ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("upload", "-h", "--help", "--version"):
        argv.insert(0, "upload")
    parser, upload = _parsers()
    args = parser.parse_args(argv)
    if not args.server:
        upload.error("give the server with --server URL (or set IMGCAP_SERVER)")
    if not args.token:
        upload.error("give your API token with --token TOKEN (or set IMGCAP_TOKEN)")
    return args


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A file name the console's encoding cannot show must not end the run halfway.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = parse_args(argv)
    try:
        return run_upload(args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to send the rest", file=sys.stderr)
        return 130


def run_upload(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The upload command: its output on `out` (summary) and `err` (progress, errors); its exit status."""
    prog = _program()
    progress = Progress(err, quiet=args.quiet)
    scan = find_images(args.paths, recursive=args.recursive)
    if scan.missing:
        print(f"{prog}: error: no such file or folder: {', '.join(map(str, scan.missing))}", file=err)
        return USAGE
    client = Client(
        args.server, args.token, on_wait=lambda why, s: progress.note(f"{why}; waiting {s:.3g} s")
    )
    report = Report()
    try:
        check_server(client)
        album_id = None
        if args.album:
            album_id, report.album_created = find_album(client, args.album, create=not args.dry_run)
            report.album = " ".join(args.album.split())
        if not scan.files:
            print(f"no images found ({scan.ignored} other files passed over)", file=out)
            return OK
        hashes = hash_files(scan.files, args.concurrency, progress)
        first: dict[str, Path] = {}  # each content once, as its first path
        for path in scan.files:
            found = hashes[path]
            if isinstance(found, OSError):
                report.results.append(FileResult(path, "failed", message=f"cannot read it: {found}"))
            elif found in first:
                report.results.append(
                    FileResult(path, "copy", found, message=f"same contents as {first[found]}")
                )
            else:
                first[found] = path
        known = known_digests(client, list(first), progress)
        report.results += [
            FileResult(path, "already", sha, image_id=known[sha])
            for sha, path in first.items()
            if sha in known
        ]
        todo = [(path, sha) for sha, path in first.items() if sha not in known]
        if known and not args.dry_run:
            progress.note(f"{len(known)} file{'s' if len(known) != 1 else ''} already on the server: skipped")
        if args.dry_run:
            progress.finish()
            if report.album and album_id is None:
                print(f"would make the album {report.album!r}", file=out)
            for path, _ in todo:
                print(f"would upload: {path}", file=out)
            for result in report.of("already"):
                print(f"already on the server: {result.path}", file=out)
            for result in report.of("failed"):
                print(f"failed: {result.path}: {result.message}", file=out)
            print(
                f"dry run: would upload {len(todo)}, already on the server {report.count('already')}; "
                "nothing was sent",
                file=out,
            )
            return SOME_FAILED if report.count("failed") else OK
        if album_id is not None and known:
            # Skipped as already on the server: they still belong in the album asked for.
            add_to_album(client, album_id, list(known.values()))
        results, sender, report.fatal = upload_files(
            client,
            todo,
            visibility=args.visibility,
            concurrency=args.concurrency,
            progress=progress,
            album_id=album_id,
        )
        report.results += results
        report.batch_id, report.batch_page = sender.batch_id, sender.batch_page
    except FatalError as error:
        progress.finish()
        print(f"{prog}: error: {error}", file=err)
        return USAGE
    finally:
        progress.finish()
    print_summary(report, scan.ignored, out)
    if report.fatal:
        print(f"{prog}: error: {report.fatal}", file=err)
        return USAGE
    return SOME_FAILED if report.count("failed") else OK


def print_summary(report: Report, ignored: int, out: TextIO) -> None:
    order = {path: i for i, path in enumerate(sorted(r.path for r in report.results))}
    for result in sorted(report.of("failed"), key=lambda r: order[r.path]):
        print(f"failed: {result.path}: {result.message}", file=out)
    print(
        f"uploaded {report.count('uploaded')}, already on the server {report.count('already')}, "
        f"failed {report.count('failed')}",
        file=out,
    )
    if report.count("copy"):
        n = report.count("copy")
        print(f"{n} file{'s' if n != 1 else ''} with the same contents as another not sent again", file=out)
    if report.count("not_sent"):
        print(f"not sent: {report.count('not_sent')} (the run stopped)", file=out)
    if ignored:
        print(f"passed over {ignored} file{'s' if ignored != 1 else ''} that are not images", file=out)
    if report.batch_page:
        print(f"batch {report.batch_id}: {report.batch_page}", file=out)
    if report.album:
        n = report.count("uploaded") + report.count("already")
        made = " (new)" if report.album_created else ""
        print(f"album {report.album!r}{made}: {n} photo{'s' if n != 1 else ''} of this run in it", file=out)
