"""img2dataset output: `KEY.jpg` + `KEY.txt` (the caption) + `KEY.json` (metadata) per image.

This is what img2dataset writes for CC3M, CC12M or LAION subsets, either as folders
(`00000/000000012.jpg` …, `--output_format files`) or packed in webdataset `.tar` shards
(`--output_format webdataset`: the same three members per key). `root` is one such folder,
a folder of them, or a single shard.

Images inside a shard are unpacked once into `cache_dir()/webdataset/` (keyed by the shard's
name, size and mtime) so records can name a real file, like every other format.

The layout has no splits, so one is derived from each key: `dev` holds the keys whose stable
hash falls in 1/20 of the range (about 1,000 of 18,643 Conceptual Captions images), `train`
the rest. The same key is in the same split on every machine and for any subset.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ml.data.parsing import BadRows, clean_caption, image_path
from ml.data.records import CaptionDataset, CaptionRecord, DatasetError
from ml.paths import cache_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DEV_FRACTION = 20  # one key in 20 is dev
SPLIT_ALIASES = {"val": ("dev",), "validation": ("dev",)}


def split_of(key: str) -> str:
    """The key's split, "dev" or "train", from a stable hash of it (never from file order)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "dev" if int.from_bytes(digest[:4], "big") % DEV_FRACTION == 0 else "train"


def read_img2dataset(
    root: Path, split: str | None, bad: BadRows, images_dir: str | Path | None = None
) -> CaptionDataset:
    """Every `KEY.jpg` with a caption under `root` (folders and `.tar` shards, sorted by path)."""
    if images_dir is not None:
        raise DatasetError("img2dataset: images sit beside their captions; images_dir does not apply", root)
    records: list[CaptionRecord] = []
    for folder, names, source in _sources(root):
        records.extend(_read_folder(folder, names, source, bad))
    if not records and not bad.count:
        raise DatasetError(f"no img2dataset images (KEY.jpg with KEY.txt or KEY.json) found in {root}")
    dataset = CaptionDataset("img2dataset", records, bad.count, str(root), dict(SPLIT_ALIASES))
    return dataset.split(split) if split is not None else dataset


def _sources(root: Path) -> Iterator[tuple[Path, set[str], Path]]:
    """(folder holding the files, their names, what to name in errors) for each folder or shard."""
    if root.is_file():
        if not root.name.endswith(".tar"):
            raise DatasetError("expected a folder or a webdataset .tar shard", root)
        folder = _unpacked(root)
        yield folder, set(os.listdir(folder)), root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # never read our own unpacked shards back (a cache folder inside `root`)
        dirnames[:] = sorted(d for d in dirnames if not (d == "webdataset" and _is_cache(here / d)))
        if any(f.lower().endswith(IMAGE_SUFFIXES) for f in filenames):
            yield here, set(filenames), here
        for shard in sorted(f for f in filenames if f.endswith(".tar")):
            folder = _unpacked(here / shard)
            yield folder, set(os.listdir(folder)), here / shard


def _is_cache(path: Path) -> bool:
    return path.resolve() == (cache_dir() / "webdataset").resolve()


def _read_folder(folder: Path, names: set[str], source: Path, bad: BadRows) -> list[CaptionRecord]:
    records = []
    for name in sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES)):
        key = name.rsplit(".", 1)[0]
        txt, meta = f"{key}.txt", f"{key}.json"
        caption = ""
        if txt in names:
            try:
                caption = clean_caption((folder / txt).read_text(encoding="utf-8-sig"))
            except UnicodeDecodeError:
                bad.bad(f"{txt} is not valid UTF-8", _where(source, folder, txt))
                continue
        elif meta in names:
            caption = _json_caption(folder / meta, _where(source, folder, meta), key, bad)
            if caption is None:
                continue
        else:
            bad.bad(f"{name} has no {txt} or {meta} caption", _where(source, folder, name))
            continue
        if not caption:
            bad.bad(f"empty caption for {name}", _where(source, folder, txt if txt in names else meta))
            continue
        records.append(CaptionRecord(image_path(folder, name), " ".join(caption.split()), key, split_of(key)))
    return records


def _where(source: Path, folder: Path, name: str) -> Path:
    """The file to name in an error: itself in a folder, the shard for a shard's member."""
    return source / name if source == folder else source


def _json_caption(path: Path, where: Path, key: str, bad: BadRows) -> str | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        bad.bad(f"{key}.json is not valid JSON ({exc})", where)
        return None
    if not isinstance(meta, dict):
        bad.bad(f"{key}.json is not an object", where)
        return None
    return clean_caption(meta.get("caption"))


def _unpacked(shard: Path) -> Path:
    """The shard's members in a cache folder, unpacked once (atomically: a rename marks it done)."""
    stat = shard.stat()
    tag = hashlib.sha256(f"{shard.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "webdataset" / f"{shard.stem}-{tag}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{shard.stem}-"))
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                # Only plain files, flattened to their base name: a shard cannot write outside tmp.
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                if not name or name.startswith("."):
                    continue
                src = tar.extractfile(member)
                if src is not None:
                    (tmp / name).write_bytes(src.read())
            _check_end(tar)
    except (tarfile.TarError, EOFError, OSError) as exc:
        _remove_tree(tmp)
        raise DatasetError(f"not a readable webdataset shard ({exc})", shard) from None
    try:
        os.replace(tmp, target)
    except OSError:  # another process unpacked it first
        _remove_tree(tmp)
    return target


def _check_end(tar: tarfile.TarFile) -> None:
    """ReadError unless the members end at a zero block (the end-of-archive marker).

    tarfile stops quietly at a header cut short or garbled after the first member, so a shard
    whose download was interrupted would otherwise load with its last images missing.
    """
    assert tar.fileobj is not None
    tar.fileobj.seek(tar.offset)
    end = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
        raise tarfile.ReadError("truncated or damaged: no end-of-archive marker after the last member")


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
