"""Dataset readers: real Flickr8k and COCO-mini files, small fixtures for the other formats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ml.data import DATASET_FORMATS, CaptionDataset, DatasetError, dataset_summary, load_dataset

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
    assert set(DATASET_FORMATS) == {"flickr8k", "flickr8k_kaggle", "flickr30k", "coco", "karpathy", "csv"}


def test_dataset_summary() -> None:
    summary = dataset_summary(load_dataset("karpathy", FIXTURES / "karpathy"))
    assert (summary["images"], summary["captions"], summary["skipped"]) == (4, 5, 0)
    assert summary["mean_caption_words"] == pytest.approx((5 + 4 + 5 + 3 + 5) / 5, abs=0.01)
    assert summary["splits"]["train"] == {"images": 1, "captions": 2, "mean_caption_words": 4.5}
    assert set(summary["splits"]) == {"train", "restval", "val", "test"}
