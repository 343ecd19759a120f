"""Dataset readers: real Flickr8k and COCO-mini files, small fixtures for the other formats."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from ml.data import DATASET_FORMATS, CaptionDataset, DatasetError, dataset_summary, load_dataset
from ml.data.img2dataset import split_of

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR8K = DATA / "flickr8k"
COCO_MINI = DATA / "coco-mini"

needs_flickr8k = pytest.mark.skipif(
    not (FLICKR8K / "Flickr8k.token.txt").is_file(), reason=f"Flickr8k not found at {FLICKR8K}"
)
needs_coco = pytest.mark.skipif(
    not (COCO_MINI / "annotations" / "captions_val2017.json").is_file(),
    reason=f"COCO-mini not found at {COCO_MINI}",
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- Flickr8k (real files) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def flickr8k() -> CaptionDataset:
    return load_dataset("flickr8k", FLICKR8K)


@needs_flickr8k
def test_flickr8k_token_format(flickr8k: CaptionDataset) -> None:
    assert len(flickr8k) == 35_000 and flickr8k.skipped == 0
    assert Counter(r.split for r in flickr8k.records) == {"train": 30_000, "dev": 5_000}
    per_image = flickr8k.captions_by_image()
    assert len(per_image) == 7_000
    assert all(len(captions) == 5 for captions in per_image.values())
    first = flickr8k.records[0]
    assert first.image_id == "1000268201_693b08cb0e.jpg"
    assert first.caption == "A child in a pink dress is climbing up a set of stairs in an entry way ."
    assert Path(first.image) == FLICKR8K / "images" / first.image_id
    assert all(Path(image).is_file() for image in flickr8k.images())
    train_names = (FLICKR8K / "Flickr_8k.trainImages.txt").read_text().split()
    assert {r.image_id for r in flickr8k.split("train").records} == set(train_names)


@needs_flickr8k
def test_flickr8k_splits(flickr8k: CaptionDataset) -> None:
    train = load_dataset("flickr8k", FLICKR8K, split="train")
    dev = load_dataset("flickr8k", FLICKR8K / "Flickr8k.token.txt", split="dev")
    assert (len(train.images()), len(train)) == (6_000, 30_000)
    assert (len(dev.images()), len(dev)) == (1_000, 5_000)
    assert load_dataset("flickr8k", FLICKR8K, split="val").records == dev.records
    assert flickr8k.split("val").records == dev.records
    with pytest.raises(DatasetError, match="testImages"):
        load_dataset("flickr8k", FLICKR8K, split="test")


@needs_flickr8k
def test_flickr8k_kaggle_agrees_with_token_format(flickr8k: CaptionDataset) -> None:
    kaggle = load_dataset("flickr8k_kaggle", FLICKR8K / "captions.txt")
    assert kaggle.name == "flickr8k_kaggle"
    assert kaggle.records == flickr8k.records  # same order, captions, paths and splits
    dev = load_dataset("flickr8k_kaggle", FLICKR8K, split="val")
    assert (len(dev.images()), len(dev)) == (1_000, 5_000)


def test_flickr8k_kaggle_commas_and_no_split_files(tmp_path: Path) -> None:
    _write(
        tmp_path / "captions.txt",
        "image,caption\n"
        "a.jpg,A dog , a ball and a lake .\n"
        'a.jpg,"A dog shakes its head , a red ball next to it ."\n'
        'b.jpg,"Quoted" words, then more\n',
    )
    ds = load_dataset("flickr8k_kaggle", tmp_path)
    assert [r.caption for r in ds.records] == [
        "A dog , a ball and a lake .",
        "A dog shakes its head , a red ball next to it .",
        '"Quoted" words, then more',
    ]
    assert {r.split for r in ds.records} == {None}
    with pytest.raises(DatasetError, match="no split files"):
        load_dataset("flickr8k_kaggle", tmp_path, split="train")


def test_flickr8k_original_zip_layout(tmp_path: Path) -> None:
    text = tmp_path / "Flickr8k_text"
    _write(text / "Flickr8k.token.txt", "x.jpg#0\tA cat .\ny.jpg#0\tA dog .\nz.jpg#0\tA cow .\n")
    _write(text / "Flickr_8k.trainImages.txt", "x.jpg\n")
    _write(text / "Flickr_8k.testImages.txt", "y.jpg\n")
    (tmp_path / "Flicker8k_Dataset").mkdir()
    ds = load_dataset("flickr8k", tmp_path)
    assert [r.split for r in ds.records] == ["train", "test", None]
    assert Path(ds.records[0].image) == tmp_path / "Flicker8k_Dataset" / "x.jpg"
    assert [r.image_id for r in load_dataset("flickr8k", tmp_path, split="test").records] == ["y.jpg"]
    other = load_dataset("flickr8k", tmp_path, images_dir=tmp_path / "elsewhere")
    assert Path(other.records[0].image) == tmp_path / "elsewhere" / "x.jpg"


# -- COCO (real files) --------------------------------------------------------------------


@needs_coco
def test_coco_mini() -> None:
    raw = json.loads((COCO_MINI / "annotations" / "captions_val2017.json").read_text())
    names = {image["id"]: image["file_name"] for image in raw["images"]}
    expected = Counter((names[a["image_id"]], a["caption"].strip()) for a in raw["annotations"])

    ds = load_dataset("coco", COCO_MINI)
    assert len(ds.images()) == 24 and len(ds) == len(raw["annotations"]) == 120
    assert Counter((r.image_id, r.caption) for r in ds.records) == expected
    assert {r.split for r in ds.records} == {"val2017"}
    assert all(Path(image).is_file() and Path(image).parent == COCO_MINI / "val2017" for image in ds.images())
    assert all(len(captions) == 5 for captions in ds.captions_by_image().values())

    by_file = load_dataset("coco", COCO_MINI / "annotations" / "captions_val2017.json", split="val")
    assert by_file.records == ds.records == ds.split("val").records
    with pytest.raises(DatasetError, match="available: val2017"):
        load_dataset("coco", COCO_MINI, split="train")


def test_coco_bad_entries(tmp_path: Path) -> None:
    data = {
        "images": [{"id": 1, "file_name": "one.jpg"}, {"id": 2}],
        "annotations": [
            {"image_id": 1, "caption": "A thing."},
            {"image_id": 7, "caption": "Nobody's."},
            {"image_id": 1, "caption": "  "},
        ],
    }
    path = _write(tmp_path / "annotations" / "captions_train2014.json", json.dumps(data))
    with pytest.raises(DatasetError, match=r"images\[1\]") as err:
        load_dataset("coco", tmp_path)
    assert err.value.path == str(path)
    ds = load_dataset("coco", tmp_path, skip_bad=True)
    assert ds.skipped == 3 and [r.caption for r in ds.records] == ["A thing."]
    assert ds.records[0].split == "train2014"
    assert Path(ds.records[0].image) == tmp_path / "train2014" / "one.jpg"


# -- Flickr30k, Karpathy, plain CSV (fixtures) -------------------------------------------


def test_flickr30k_results_csv_with_quirky_row() -> None:
    ds = load_dataset("flickr30k", FIXTURES / "flickr30k")
    assert len(ds) == 6 and ds.skipped == 0
    assert ds.records[1].caption == "Two young , White males are outside near many bushes ."
    # the real file's row whose comment landed in the comment_number field
    assert ds.records[-1].image_id == "2199200615.jpg"
    assert ds.records[-1].caption == "A dog runs across the grass ."
    assert ds.images() == [
        str(FIXTURES / "flickr30k" / name) for name in ("1000092795.jpg", "2199200615.jpg")
    ]
    with pytest.raises(DatasetError, match="karpathy"):
        load_dataset("flickr30k", FIXTURES / "flickr30k" / "results.csv", split="train")


def test_karpathy_splits() -> None:
    ds = load_dataset("karpathy", FIXTURES / "karpathy")
    assert ds.name == "karpathy_coco"
    assert Counter(r.split for r in ds.records) == {"train": 2, "restval": 1, "val": 1, "test": 1}
    assert ds.records[1].caption == "Dinner on a table."
    assert ds.records[3].caption == "a red motorcycle"  # tokens only: joined
    assert (
        Path(ds.records[0].image) == FIXTURES / "karpathy" / "train2014" / "COCO_train2014_000000000009.jpg"
    )
    assert ds.records[0].image_id == "COCO_train2014_000000000009.jpg"

    train = load_dataset("karpathy", FIXTURES / "karpathy" / "dataset_coco.json", split="train")
    assert [r.split for r in train.records] == ["train", "train", "restval"]  # restval counts as train
    assert train.records == ds.split("train").records
    assert [r.caption for r in load_dataset("karpathy", FIXTURES / "karpathy", split="dev").records] == [
        "a red motorcycle"
    ]
    with pytest.raises(DatasetError, match="unknown split 'bogus'"):
        load_dataset("karpathy", FIXTURES / "karpathy", split="bogus")


def test_plain_csv_url_and_relative_path() -> None:
    ds = load_dataset("csv", FIXTURES / "plain_csv" / "captions.csv")
    assert [r.image for r in ds.records] == [
        "https://example.org/photos/dog.jpg?size=large",
        str(FIXTURES / "plain_csv" / "images" / "cat.jpg"),
    ]
    assert [r.image_id for r in ds.records] == [
        "https://example.org/photos/dog.jpg?size=large",
        "images/cat.jpg",
    ]
    assert ds.records[0].caption == "A dog catches a frisbee, mid-air ."
    assert load_dataset("csv", FIXTURES / "plain_csv").records == ds.records
    with pytest.raises(DatasetError, match="no 'split' column"):
        load_dataset("csv", FIXTURES / "plain_csv", split="train")


def test_plain_csv_split_column_and_unquoted_commas(tmp_path: Path) -> None:
    _write(tmp_path / "data.csv", "Path,Split,Text\n/abs/a.jpg,train,One, two and three\nb.jpg,val,Four\n")
    ds = load_dataset("csv", tmp_path)
    assert ds.records[0].image == "/abs/a.jpg" and ds.records[0].caption == "One, two and three"
    assert [r.image_id for r in load_dataset("csv", tmp_path, split="val").records] == ["b.jpg"]
    with pytest.raises(DatasetError, match="header needs an image column"):
        load_dataset("csv", _write(tmp_path / "other" / "x.csv", "picture,caption\na.jpg,A\n"))


# -- malformed rows and missing files -----------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name", "text", "bad_line", "good_rows"),
    [
        ("flickr8k", "Flickr8k.token.txt", "a.jpg#0\tA cat .\nno caption here\na.jpg#1\tAnother .\n", 2, 2),
        ("flickr8k", "Flickr8k.token.txt", "a.jpg#0\tA cat .\n\na.jpg#1\t   \n", 3, 1),
        ("flickr8k_kaggle", "captions.txt", "image,caption\na.jpg,A cat .\na.jpg,\nb.jpg,B\n", 3, 2),
        ("flickr8k_kaggle", "captions.txt", "image,caption\na.jpg,A cat .\nonly-one-field\n", 3, 1),
        ("flickr30k", "results.csv", "image_name| comment_number| comment\na.jpg| 0| A\na.jpg| 1|\n", 3, 1),
        ("flickr30k", "results.csv", "image_name| comment_number| comment\na.jpg| x| A\nb.jpg| 0| B\n", 2, 1),
        ("csv", "captions.csv", 'image,caption\na.jpg,A\nb.jpg,""\nc.jpg,C\n', 3, 2),
        # a quoted caption over two lines: the bad row after it is still on line 4
        ("csv", "captions.csv", 'image,caption\na.jpg,"A\nspans two lines"\nb.jpg\n', 4, 1),
    ],
)
def test_malformed_row_names_file_and_line(
    tmp_path: Path, fmt: str, name: str, text: str, bad_line: int, good_rows: int
) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(DatasetError) as err:
        load_dataset(fmt, tmp_path)
    assert (err.value.path, err.value.line) == (str(path), bad_line)
    assert f"{path}, line {bad_line}:" in str(err.value)

    ds = load_dataset(fmt, path, skip_bad=True)
    assert (ds.skipped, len(ds)) == (1, good_rows)


def test_split_file_naming_an_unknown_image(tmp_path: Path) -> None:
    _write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tA cat .\nb.jpg#0\tA dog .\n")
    split_file = _write(tmp_path / "Flickr_8k.devImages.txt", "a.jpg\nghost.jpg\n")
    with pytest.raises(DatasetError, match="ghost.jpg has no captions") as err:
        load_dataset("flickr8k", tmp_path, split="dev")
    assert (err.value.path, err.value.line) == (str(split_file), 2)
    ds = load_dataset("flickr8k", tmp_path, split="dev", skip_bad=True)
    assert (ds.skipped, [r.image_id for r in ds.records]) == (1, ["a.jpg"])


def test_karpathy_bad_entries(tmp_path: Path) -> None:
    images = [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A."}, {"raw": ""}]},
        {"filename": "b.jpg", "split": "val"},
    ]
    path = _write(tmp_path / "dataset_flickr8k.json", json.dumps({"images": images}))
    with pytest.raises(DatasetError, match=r"images\[0\]\.sentences\[1\]") as err:
        load_dataset("karpathy", tmp_path)
    assert err.value.path == str(path)
    ds = load_dataset("karpathy", tmp_path, skip_bad=True)
    assert (ds.skipped, len(ds)) == (2, 1)


def test_missing_files_and_unknown_format(tmp_path: Path) -> None:
    for fmt, looked_for in [
        ("flickr8k", "Flickr8k.token.txt"),
        ("flickr8k_kaggle", "captions.txt"),
        ("flickr30k", "results.csv"),
        ("coco", "captions_"),
        ("karpathy", "dataset_"),
        ("csv", "CSV"),
    ]:
        with pytest.raises(DatasetError, match=looked_for):
            load_dataset(fmt, tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("coco", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="choose from"):
        load_dataset("imagenet", tmp_path)
    assert set(DATASET_FORMATS) == {
        "flickr8k",
        "flickr8k_kaggle",
        "flickr30k",
        "coco",
        "karpathy",
        "csv",
        "img2dataset",
    }


def test_dataset_summary() -> None:
    summary = dataset_summary(load_dataset("karpathy", FIXTURES / "karpathy"))
    assert (summary["images"], summary["captions"], summary["skipped"]) == (4, 5, 0)
    assert summary["mean_caption_words"] == pytest.approx((5 + 4 + 5 + 3 + 5) / 5, abs=0.01)
    assert summary["splits"]["train"] == {"images": 1, "captions": 2, "mean_caption_words": 4.5}
    assert set(summary["splits"]) == {"train", "restval", "val", "test"}


# -- img2dataset folders and webdataset shards (fixture + shards built here) --------------

IMG2DATASET = FIXTURES / "img2dataset"
# what the fixture's KEY.txt files say, whitespace collapsed; 000000012 is the one dev key
IMG2DATASET_CAPTIONS = {
    "000000000": "a red double-decker bus drives past the station .",
    "000000002": "Actor arrives at the premiere of the film.",
    "000000012": "beautiful blue sky over the mountains",
    "000010000": "yellow flowers in a field",
    "000010003": "portrait of a person wearing a grey coat .",
}
JPEG = (IMG2DATASET / "00000" / "000000000.jpg").read_bytes()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty IMGCAP_CACHE_DIR, so shards unpack under tmp_path and nowhere else."""
    path = tmp_path / "cache"
    monkeypatch.setenv("IMGCAP_CACHE_DIR", str(path))
    return path


def _members(*folders: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file in `folders`, key by key, as img2dataset packs a shard."""
    return [(p.name, p.read_bytes()) for folder in folders for p in sorted(folder.iterdir())]


def _tar(path: Path, members: Iterable[tuple[str, bytes] | tarfile.TarInfo]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def _unpacked(cache: Path) -> list[Path]:
    """The shard folders in the cache, hidden (half-unpacked) ones included."""
    folder = cache / "webdataset"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _rows(ds: CaptionDataset) -> list[tuple[str, str, str | None]]:
    return [(r.image_id, r.caption, r.split) for r in ds.records]


def test_img2dataset_folders() -> None:
    ds = load_dataset("img2dataset", IMG2DATASET)
    assert ds.name == "img2dataset" and ds.skipped == 0
    # the stats .json and .parquet files beside the shard folders are not images
    assert [(r.image_id, r.caption) for r in ds.records] == list(IMG2DATASET_CAPTIONS.items())
    assert [r.image for r in ds.records] == [str(p) for p in sorted(IMG2DATASET.glob("*/*.jpg"))]
    assert all(os.path.isabs(r.image) and Path(r.image).is_file() for r in ds.records)
    assert all(Path(r.image).stem == r.image_id for r in ds.records)
    assert {r.image_id: r.split for r in ds.records} == {
        key: "dev" if key == "000000012" else "train" for key in IMG2DATASET_CAPTIONS
    }
    assert all(len(captions) == 1 for captions in ds.captions_by_image().values())
    one = load_dataset("img2dataset", IMG2DATASET / "00001")
    assert one.records == ds.records[3:]


def test_img2dataset_webdataset_shard(tmp_path: Path, cache: Path) -> None:
    folders = load_dataset("img2dataset", IMG2DATASET)
    shard = _tar(tmp_path / "00000.tar", _members(IMG2DATASET / "00000", IMG2DATASET / "00001"))
    ds = load_dataset("img2dataset", shard)
    assert _rows(ds) == _rows(folders) and ds.skipped == 0
    (unpacked,) = _unpacked(cache)
    for from_shard, from_folder in zip(ds.records, folders.records, strict=True):
        assert Path(from_shard.image).parent == unpacked
        assert Path(from_shard.image).read_bytes() == Path(from_folder.image).read_bytes()
    assert [r.image_id for r in load_dataset("img2dataset", shard, split="dev").records] == ["000000012"]


def test_img2dataset_folder_of_shards(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "cc3m"
    for name in ("00000", "00001"):
        _tar(root / f"{name}.tar", _members(IMG2DATASET / name))
        shutil.copy(IMG2DATASET / f"{name}_stats.json", root)
        shutil.copy(IMG2DATASET / f"{name}.parquet", root)
    ds = load_dataset("img2dataset", root)
    assert _rows(ds) == _rows(load_dataset("img2dataset", IMG2DATASET))
    assert [p.name.split("-")[0] for p in _unpacked(cache)] == ["00000", "00001"]
    assert all(Path(image).is_file() for image in ds.images())


def test_img2dataset_shard_unpacked_once(tmp_path: Path, cache: Path) -> None:
    shard = _tar(tmp_path / "00001.tar", _members(IMG2DATASET / "00001"))
    first = load_dataset("img2dataset", shard)
    (unpacked,) = _unpacked(cache)
    (unpacked / "000010000.txt").write_text("edited in the cache", encoding="utf-8")
    second = load_dataset("img2dataset", shard)
    assert _unpacked(cache) == [unpacked]  # the same folder, not unpacked again
    assert second.records[0].caption == "edited in the cache"
    assert second.records[0].image == first.records[0].image
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    third = load_dataset("img2dataset", shard)  # a changed shard is unpacked afresh
    assert len(_unpacked(cache)) == 2 and _rows(third) == _rows(first)


def test_img2dataset_cache_inside_the_dataset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGCAP_CACHE_DIR", str(tmp_path))
    _tar(tmp_path / "00000.tar", _members(IMG2DATASET / "00000"))
    first = load_dataset("img2dataset", tmp_path)
    assert (tmp_path / "webdataset").is_dir() and len(first) == 3
    assert load_dataset("img2dataset", tmp_path).records == first.records  # unpacked images not read twice


def test_img2dataset_shard_members_stay_in_the_cache(tmp_path: Path, cache: Path) -> None:
    outside = tmp_path / "outside"
    symlink = tarfile.TarInfo("000000006.jpg")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hardlink = tarfile.TarInfo("000000007.jpg")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "nested/dir/000000005.jpg"
    directory = tarfile.TarInfo("../../../outside")
    directory.type = tarfile.DIRTYPE
    shard = _tar(
        tmp_path / "shards" / "00000.tar",
        [
            ("../../../evil.txt", b"escaped"),
            (str(outside / "absolute.txt"), b"escaped"),
            ("nested/dir/000000005.jpg", JPEG),
            ("nested/dir/000000005.txt", b"A key inside a folder of the shard ."),
            symlink,
            ("000000006.txt", b"a link"),
            hardlink,
            ("000000007.txt", b"a hard link"),
            directory,
        ],
    )
    ds = load_dataset("img2dataset", shard, skip_bad=True)
    assert [(r.image_id, r.caption) for r in ds.records] == [
        ("000000005", "A key inside a folder of the shard .")
    ]
    (unpacked,) = _unpacked(cache)
    files = {p for p in tmp_path.rglob("*") if not p.is_dir()}
    assert files == {shard} | {
        unpacked / n
        for n in (
            "evil.txt",
            "absolute.txt",
            "000000005.jpg",
            "000000005.txt",
            "000000006.txt",
            "000000007.txt",
        )
    }
    assert not outside.exists() and not any(p.is_symlink() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(
    "damage",
    ["garbage", "empty file", "cut inside a member", "cut at a member boundary", "cut inside a header"],
)
def test_img2dataset_damaged_shard_names_it(tmp_path: Path, cache: Path, damage: str) -> None:
    root = tmp_path / "shards"
    _tar(root / "00000.tar", _members(IMG2DATASET / "00000"))
    good_shard = _tar(tmp_path / "good.tar", _members(IMG2DATASET / "00001"))
    with tarfile.open(good_shard) as tar:
        jpeg, txt = tar.getmembers()[0], tar.getmembers()[2]  # the first key's image and caption
    after_first_key = txt.offset_data + -(-txt.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    cut = {
        "garbage": None,
        "empty file": 0,
        "cut inside a member": jpeg.offset_data + jpeg.size // 2,
        "cut at a member boundary": after_first_key,  # tarfile alone reads this as a 1-key shard
        "cut inside a header": after_first_key + 100,
    }[damage]
    good = good_shard.read_bytes()
    bad = root / "00001.tar"
    bad.write_bytes(b"not a tar file\n" * 100 if cut is None else good[:cut])
    for skip_bad in (False, True):
        with pytest.raises(DatasetError, match="not a readable webdataset shard") as err:
            load_dataset("img2dataset", root, skip_bad=skip_bad)
        assert err.value.path == str(bad) and str(err.value).startswith(f"{bad}: ")
    assert [p.name.split("-")[0] for p in _unpacked(cache)] == ["00000"]  # nothing left of the bad one
    # the end-of-archive marker present: the same members load
    bad.write_bytes(good)
    assert len(load_dataset("img2dataset", root)) == 5


def test_img2dataset_caption_from_json(tmp_path: Path) -> None:
    root = shutil.copytree(IMG2DATASET, tmp_path / "data")
    for txt in root.glob("*/*.txt"):
        txt.unlink()
    ds = load_dataset("img2dataset", root)
    assert [(r.image_id, r.caption) for r in ds.records] == list(IMG2DATASET_CAPTIONS.items())
    # both present: KEY.txt wins; a byte-order mark is dropped; upper-case suffixes are images
    folder = tmp_path / "other" / "00000"
    folder.mkdir(parents=True)
    (folder / "a.JPG").write_bytes(JPEG)
    (folder / "a.txt").write_bytes("\ufeffFrom the  txt .".encode())
    _write(folder / "a.json", json.dumps({"key": "a", "caption": "From the json ."}))
    assert [(r.image_id, r.caption) for r in load_dataset("img2dataset", folder.parent).records] == [
        ("a", "From the txt .")
    ]


@pytest.mark.parametrize(
    ("files", "at_fault", "reason"),
    [
        ({}, "000000007.jpg", "000000007.jpg has no 000000007.txt or 000000007.json caption"),
        ({"txt": b" \n\t\n", "json": b'{"caption": "unused"}'}, "000000007.txt", "empty caption"),
        ({"json": b'{"key": "000000007", "caption": null}'}, "000000007.json", "empty caption"),
        ({"json": b'{"key": "000000007", "caption": ""}'}, "000000007.json", "empty caption"),
        ({"json": b'{"key": "000000007", "caption": "unterminated'}, "000000007.json", "not valid JSON"),
        ({"json": b'["a caption"]'}, "000000007.json", "not an object"),
        ({"json": b'{"caption": "caf\xe9"}'}, "000000007.json", "not valid JSON"),
        ({"txt": b"caf\xe9 au lait\n"}, "000000007.txt", "not valid UTF-8"),
    ],
    ids=[
        "no caption file",
        "empty txt",
        "json caption null",
        "json caption empty",
        "invalid json",
        "json not an object",
        "json not utf-8",
        "txt not utf-8",
    ],
)
def test_img2dataset_bad_image_names_the_file(
    tmp_path: Path, cache: Path, files: dict[str, bytes], at_fault: str, reason: str
) -> None:
    folder = tmp_path / "data" / "00000"
    shutil.copytree(IMG2DATASET / "00000", folder)
    (folder / "000000007.jpg").write_bytes(JPEG)
    for suffix, data in files.items():
        (folder / f"000000007.{suffix}").write_bytes(data)
    with pytest.raises(DatasetError, match=reason) as err:
        load_dataset("img2dataset", tmp_path / "data")
    assert err.value.path == str(folder / at_fault) and str(err.value).startswith(f"{folder / at_fault}: ")
    ds = load_dataset("img2dataset", tmp_path / "data", skip_bad=True)
    assert ds.skipped == 1 and [r.image_id for r in ds.records] == ["000000000", "000000002", "000000012"]

    # the same files in a shard: the shard is named (its member in the reason)
    shard = _tar(tmp_path / "shard" / "00000.tar", _members(folder))
    with pytest.raises(DatasetError, match=reason) as err:
        load_dataset("img2dataset", shard)
    assert err.value.path == str(shard)
    assert load_dataset("img2dataset", shard, skip_bad=True).skipped == 1


def test_img2dataset_split_of_is_stable_and_one_in_twenty() -> None:
    keys = [f"{i:09d}" for i in range(20_000)]
    splits = [split_of(key) for key in keys]
    assert set(splits) == {"train", "dev"}
    assert 0.04 <= splits.count("dev") / len(keys) <= 0.06
    assert [split_of(key) for key in reversed(keys)] == splits[::-1]  # per key, not per position
    # a stable hash, not Python's per-process hash(): these hold on every machine
    assert [split_of(k) for k in ("000000000", "000000012", "000000021", "000010012", "000010013")] == [
        "train",
        "dev",
        "dev",
        "dev",
        "train",
    ]


def test_img2dataset_splits(tmp_path: Path, cache: Path) -> None:
    ds = load_dataset("img2dataset", IMG2DATASET)
    assert {r.split for r in ds.records} == {split_of(r.image_id) for r in ds.records} == {"train", "dev"}
    dev = load_dataset("img2dataset", IMG2DATASET, split="dev")
    assert dev.name == "img2dataset:dev" and [r.image_id for r in dev.records] == ["000000012"]
    train = load_dataset("img2dataset", IMG2DATASET, split="train")
    assert [r.image_id for r in train.records] == [k for k in IMG2DATASET_CAPTIONS if k != "000000012"]
    for alias in ("val", "validation"):
        assert load_dataset("img2dataset", IMG2DATASET, split=alias).records == dev.records
        assert ds.split(alias).records == dev.records
    with pytest.raises(DatasetError, match="unknown split 'test'.*available: train, dev"):
        load_dataset("img2dataset", IMG2DATASET, split="test")
    shard = _tar(tmp_path / "00000.tar", _members(IMG2DATASET / "00000"))
    assert _rows(load_dataset("img2dataset", shard, split="val")) == _rows(dev)


def test_img2dataset_nothing_to_read(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no img2dataset images"):
        load_dataset("img2dataset", empty)
    junk = tmp_path / "junk"
    (junk / "00000").mkdir(parents=True)
    for name in ("00000_stats.json", "00000.parquet"):
        shutil.copy(IMG2DATASET / name, junk)
    _write(junk / "00000" / "000000001.txt", "A caption without its image .")
    with pytest.raises(DatasetError, match="no img2dataset images"):
        load_dataset("img2dataset", junk)
    with pytest.raises(DatasetError, match=r"folder or a webdataset \.tar shard"):
        load_dataset("img2dataset", junk / "00000_stats.json")
    with pytest.raises(DatasetError, match="images_dir does not apply"):
        load_dataset("img2dataset", IMG2DATASET, images_dir=tmp_path)
    # every image bad, and skipped: an empty dataset that says how many were skipped
    (junk / "00000" / "000000002.jpg").write_bytes(JPEG)
    ds = load_dataset("img2dataset", junk, skip_bad=True)
    assert (len(ds), ds.skipped) == (0, 1)
