"""The feature cache: float16 on disk, keyed by content, resumable, tolerant of bad files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import FLICKR8K, needs_flickr8k

from ml.encoders import get_encoder
from ml.features import FeatureCache


@pytest.fixture(scope="module")
def encoder():
    return get_encoder("efficientnet_lite0", image_size=64)


def test_cache_encodes_once_and_keys_by_content(tmp_path, encoder):
    needs_flickr8k()
    images = sorted((FLICKR8K / "images").iterdir())[:5]
    cache = FeatureCache(encoder, root=tmp_path)
    feats, failed = cache.get(images, batch_size=2, progress=False)
    assert failed == [] and feats.dtype == np.float16 and feats.shape == (5, 4, 1280)
    files = sorted(cache.root.rglob("*.npy"))
    assert len(files) == 5
    np.testing.assert_allclose(feats[0], encoder.encode([images[0]])[0], rtol=1e-2, atol=1e-2)
    # Same bytes under another name: served from the cache, nothing new written.
    copy = tmp_path / "copy.jpg"
    shutil.copy(images[0], copy)
    mtimes = [f.stat().st_mtime_ns for f in files]
    again, _ = cache.get([copy, *images], progress=False)
    assert [f.stat().st_mtime_ns for f in sorted(cache.root.rglob("*.npy"))] == mtimes
    np.testing.assert_array_equal(again[0], feats[0])
    # An interrupted run resumes: a deleted entry is the only one recomputed.
    files[2].unlink()
    cache.get(images, progress=False)
    assert len(list(cache.root.rglob("*.npy"))) == 5


def test_unreadable_images_are_reported(tmp_path, encoder):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    feats, failed = FeatureCache(encoder, root=tmp_path / "c").get([bad], progress=False)
    assert failed == [str(bad)] and not feats.any()
