"""Management commands (caption_folder, import_captions, export_captions, recaption_all) and the
benchmarks' synthetic captions."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from captions import selectors
from captions.models import Batch, Caption, Image
from captions.services.model_versions import ensure_model_version

pytestmark = pytest.mark.django_db

FLICKR_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k" / "images"


def run(*args, **kwargs) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def photo_folder(tmp_path, photo):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        (folder / name).write_bytes(photo())
    (folder / "notes.txt").write_text("not a photo at all, just notes " * 5)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return folder


def test_caption_folder_makes_one_batch(
    user, photo_folder, media_root, queued_ids, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        out, err = run("caption_folder", str(photo_folder), "--user", user.username, "--public")
    batch = Batch.objects.get()
    assert sorted(batch.items.values_list("name", flat=True)) == ["a.jpg", "b.jpg", "sub/c.jpg"]
    assert [r["name"] for r in batch.rejected] == ["notes.txt"]
    assert set(Image.objects.values_list("visibility", flat=True)) == {"public"}
    assert sorted(queued_ids()) == sorted(Image.objects.values_list("id", flat=True))
    assert "3 images queued" in out and "1 skipped" in out
    assert err.startswith("skipped notes.txt: ") and err.count("notes.txt") == 1, err

    out, _ = run("caption_folder", str(photo_folder), "--user", user.username)
    assert "0 images queued, 3 already uploaded" in out
    assert Image.objects.count() == 3


def test_caption_folder_errors(user, tmp_path, media_root):
    with pytest.raises(CommandError, match="not a folder"):
        run("caption_folder", str(tmp_path / "nope"), "--user", user.username)
    with pytest.raises(CommandError, match="no user"):
        run("caption_folder", str(tmp_path), "--user", "nobody")
    (tmp_path / "junk.txt").write_text("words " * 30)
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4\n" + b"0" * 100)
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"no acceptable image in .* \(2 skipped\)"):
        call_command("caption_folder", str(tmp_path), "--user", user.username, stderr=err)
    # Each reason once, the file named once (not "the API's 'rejected' list").
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("skipped doc.pdf: PDF is not a supported image format"), lines
    assert lines[1].startswith("skipped junk.txt: ") and lines[1].count("junk.txt") == 1, lines
    assert Batch.objects.count() == 0


def flickr_names(n: int) -> list[str]:
    names = sorted(p.name for p in FLICKR_IMAGES.glob("*.jpg"))[:n]
    if len(names) < n:
        pytest.skip(f"real Flickr8k photos not found in {FLICKR_IMAGES}")
    return names


def test_import_kaggle_captions_as_human_captions(user, tmp_path, media_root):
    a, b = flickr_names(2)
    captions_file = tmp_path / "captions.txt"
    captions_file.write_text(
        "image,caption\n"
        f"{a},A dog runs through the grass .\n"
        f'{a},"A brown dog, running fast ."\n'
        f"{b},Two children play on the beach .\n"
        "missing.jpg,This image is not there .\n"
    )
    out, err = run(
        "import_captions",
        str(captions_file),
        "--format",
        "kaggle",
        "--images",
        str(FLICKR_IMAGES),
        "--user",
        "alice",
    )
    assert "3 captions imported for 2 images (2 new, 0 known)" in out
    assert "1 image not found" in err
    image_a = Image.objects.get(original_name=a)
    assert sorted(image_a.captions.values_list("text", "source")) == [
        ("A brown dog, running fast .", "human"),
        ("A dog runs through the grass .", "human"),
    ]
    assert [hit.image.pk for hit in selectors.search(user, "dogs running")[0:5]] == [image_a.pk]

    out, _ = run(
        "import_captions",
        str(captions_file),
        "--format",
        "kaggle",
        "--images",
        str(FLICKR_IMAGES),
        "--user",
        "alice",
    )
    assert "0 captions imported for 2 images (0 new, 2 known)" in out
    assert Caption.objects.count() == 3


def test_import_a_plain_csv(user, tmp_path, media_root):
    (a,) = flickr_names(1)
    shutil.copy(FLICKR_IMAGES / a, tmp_path / "x.jpg")
    (tmp_path / "captions.csv").write_text("filename,caption\nx.jpg,a horse in a field\n")
    out, _ = run(
        "import_captions", str(tmp_path / "captions.csv"), "--format", "csv", "--user", "alice", "--public"
    )
    assert "1 caption imported" in out
    assert Image.objects.get().visibility == "public"


def test_import_names_a_refused_image_once(user, tmp_path, media_root):
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4\n" + b"0" * 100)
    (tmp_path / "captions.csv").write_text("filename,caption\ndoc.pdf,a page of text\n")
    out, err = run("import_captions", str(tmp_path / "captions.csv"), "--format", "csv", "--user", "alice")
    assert err.startswith("skipped doc.pdf: PDF is not a supported image format"), err
    assert err.count("doc.pdf") == 1
    assert "0 captions imported" in out and Image.objects.count() == 0


def test_import_reports_a_bad_file(user, tmp_path):
    (tmp_path / "captions.txt").write_text("no header here\n")
    with pytest.raises(CommandError, match="header"):
        run("import_captions", str(tmp_path / "captions.txt"), "--format", "kaggle", "--user", "alice")


def test_export_captions(user, other_user, make_image, model_version, save_captions, tmp_path, settings):
    settings.IMGCAP_SITE_URL = "https://imgcap.example.org/"
    mine = make_image(user)
    save_captions(mine, model_version, ["a dog runs", "a dog"])
    theirs = make_image(other_user)
    save_captions(theirs, model_version, ["a private cat"])

    out_file = tmp_path / "all.csv"
    _, err = run("export_captions", "--format", "csv", "--out", str(out_file))
    rows = list(csv.DictReader(out_file.open()))
    assert sorted(r["caption"] for r in rows) == ["a dog runs", "a private cat"]  # admin: every image
    assert rows[0]["image_url"].startswith("https://imgcap.example.org/media/images/")
    assert "2 captions exported" in err
    _, err = run("export_captions", "--format", "csv", "--all-captions", "--out", str(out_file))
    rows = list(csv.DictReader(out_file.open()))
    assert sorted(r["caption"] for r in rows) == ["a dog", "a dog runs", "a private cat"]
    assert "3 captions exported" in err

    out, _ = run("export_captions", "--format", "jsonl", "--user", "bob", "-q", "dogs")
    assert [json.loads(line)["caption"] for line in out.splitlines()] == []
    out, _ = run("export_captions", "--format", "jsonl", "--user", "alice", "-q", "dogs", "--all-captions")
    assert sorted(json.loads(line)["caption"] for line in out.splitlines()) == ["a dog", "a dog runs"]


def test_recaption_all_queues_images_the_active_model_has_not_captioned(
    user, make_image, model_version, save_captions, queued_ids, django_capture_on_commit_callbacks
):
    older = ensure_model_version(name="imgcap-older", encoder="inception_v3", metrics={})
    current, outdated, waiting = make_image(user), make_image(user), make_image(user)
    save_captions(current, model_version, ["a dog"])
    save_captions(outdated, older, ["a dog"])

    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("recaption_all")
    assert "1 image queued" in out
    assert queued_ids() == [outdated.pk]
    assert Image.objects.get(pk=outdated.pk).status == "pending"
    assert Caption.objects.filter(image=outdated).count() == 1  # old captions stay
    assert Image.objects.get(pk=waiting.pk).status == "pending"

    out, _ = run("recaption_all", "--model-version", older.name)
    assert "1 image queued" in out  # `current` has no captions from the older version
    out, _ = run("recaption_all", "--all")
    assert "0 images queued" in out  # everything is already pending
    with pytest.raises(CommandError, match="no model version"):
        run("recaption_all", "--model-version", "nope")


def test_synthetic_captions_for_benchmarks(user, capsys):
    from bench.synthetic_captions import main

    assert main(["250", "--per-image", "3", "--chunk", "100"]) == 0
    assert "250 captions created" in capsys.readouterr().out
    assert Caption.objects.count() == 250
    assert Image.objects.count() == 34 + 34 + 17  # per chunk of 100 captions: ceil(100 / 3) images
    assert not Caption.objects.filter(model_version__active=True).exists()
    texts = list(Caption.objects.values_list("text", flat=True)[:50])
    assert len(set(texts)) > 30 and all(len(t.split()) >= 4 for t in texts)
    assert selectors.search(user, "dog").count() > 0  # public rows, searchable
