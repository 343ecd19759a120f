"""EfficientNet-Lite as a Keras network, and the mapping from PyTorch state_dict names.

Lite differs from EfficientNet-B*: no squeeze-excite, ReLU6 instead of swish, and the
stem (32 ch), the head (1280 ch) and the repeat counts of the first and last stages are
not scaled. Convolutions use TF 'same' padding (asymmetric at stride 2): the PyTorch
port these weights come from (efficientnet_lite_pytorch, a lukemelas/EfficientNet-PyTorch
fork) pads exactly that way, mirroring the original TensorFlow checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# The EfficientNet-B0 baseline that every variant scales.
BASE_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Block:
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count, rounded to a multiple of 8 but never below 90% of the target."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def lite_blocks(width: float, depth: float) -> list[Block]:
    """The MBConv blocks of EfficientNet-Lite at the given width/depth multipliers."""
    blocks: list[Block] = []
    last = len(BASE_STAGES) - 1
    for i, stage in enumerate(BASE_STAGES):
        # Lite keeps the first and last stages at their base depth, and the stem at 32 channels.
        repeats = stage.repeats if i in (0, last) else int(math.ceil(depth * stage.repeats))
        f_in = STEM_FILTERS if i == 0 else round_filters(stage.filters_in, width)
        f_out = round_filters(stage.filters_out, width)
        for r in range(repeats):
            # Only a stage's first block strides and changes the channel count.
            stride, f_in_r = (stage.stride, f_in) if r == 0 else (1, f_out)
            blocks.append(Block(stage.kernel, stride, stage.expand, f_in_r, f_out))
    return blocks


def build_network(
    width: float,
    depth: float,
    image_size: int,
    include_top: bool = False,
    name: str = "efficientnet_lite",
    stop_before: int | None = None,
) -> keras.Model:
    """[N, S, S, 3] scaled pixels -> [N, h, w, 1280] features (or [N, 1000] logits with include_top).

    With `stop_before=k` the network ends at the input of block k (e.g. [N, 7, 7, 192] for lite0's
    last block): the frozen bottom whose output a fine-tuned top (`build_top`) starts from."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem", relu=True)
    blocks = lite_blocks(width, depth)
    last = len(blocks) if stop_before is None else stop_before
    for i, block in enumerate(blocks[:last]):
        x = _mbconv(x, block, f"block{i}")
    if stop_before is None:
        x = _head(x, include_top)
    return keras.Model(inputs, x, name=name)


def build_top(
    width: float, depth: float, grid: int, first_block: int, include_top: bool = False, name: str = "top"
) -> keras.Model:
    """Blocks `first_block`.. and the head: [N, g, g, C_in] block input -> [N, g, g, 1280] features
    (or [N, 1000] logits). Layer names match `build_network`'s, so the same weights load."""
    import keras

    blocks = lite_blocks(width, depth)
    if not 0 < first_block < len(blocks):
        raise ValueError(f"first_block must be in 1..{len(blocks) - 1}, not {first_block}")
    inputs = keras.Input((grid, grid, blocks[first_block].filters_in), name="block_input")
    x = inputs
    for i in range(first_block, len(blocks)):
        x = _mbconv(x, blocks[i], f"block{i}")
    return keras.Model(inputs, _head(x, include_top), name=name)


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, relu: bool):
    from keras import layers

    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{prefix}_relu")(x) if relu else x


def _mbconv(x, block: Block, p: str):
    """One MBConv block: expand 1x1, depthwise, project 1x1, residual when the shape allows."""
    from keras import layers

    shortcut = x
    if block.expand != 1:
        x = _conv_bn(x, block.filters_in * block.expand, 1, 1, f"{p}_expand", relu=True)
    x = layers.DepthwiseConv2D(
        block.kernel, block.stride, padding="same", use_bias=False, name=f"{p}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{p}_dw_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{p}_dw_relu")(x)
    x = _conv_bn(x, block.filters_out, 1, 1, f"{p}_project", relu=False)
    if block.residual:
        x = layers.Add(name=f"{p}_add")([x, shortcut])
    return x


def _head(x, include_top: bool):
    from keras import layers

    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", relu=True)
    if include_top:
        # Dropout is a no-op at inference, so the classifier is just pool + FC (logits).
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(NUM_CLASSES, name="predictions")(x)
    return x


def _bn(state: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    # Keras order: gamma, beta, moving mean, moving variance.
    return [state[f"{key}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # torch OIHW -> keras HWIO


def _depthwise(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # torch (C, 1, H, W) -> keras (H, W, C, multiplier=1)


def torch_to_keras(state: dict[str, np.ndarray], width: float, depth: float) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weight list, from an efficientnet_lite_pytorch state_dict."""
    out: dict[str, list[np.ndarray]] = {
        "stem_conv": [_conv(state["_conv_stem.weight"])],
        "stem_bn": _bn(state, "_bn0"),
        "head_conv": [_conv(state["_conv_head.weight"])],
        "head_bn": _bn(state, "_bn1"),
        "predictions": [state["_fc.weight"].T, state["_fc.bias"]],
    }
    blocks = lite_blocks(width, depth)
    for i, block in enumerate(blocks):
        t, k = f"_blocks.{i}", f"block{i}"
        if block.expand != 1:
            out[f"{k}_expand_conv"] = [_conv(state[f"{t}._expand_conv.weight"])]
            out[f"{k}_expand_bn"] = _bn(state, f"{t}._bn0")
        out[f"{k}_dw_conv"] = [_depthwise(state[f"{t}._depthwise_conv.weight"])]
        out[f"{k}_dw_bn"] = _bn(state, f"{t}._bn1")
        out[f"{k}_project_conv"] = [_conv(state[f"{t}._project_conv.weight"])]
        out[f"{k}_project_bn"] = _bn(state, f"{t}._bn2")
    if f"_blocks.{len(blocks)}._depthwise_conv.weight" in state:
        raise ValueError("state_dict has more blocks than this EfficientNet-Lite variant")
    return {name: [np.ascontiguousarray(w, dtype=np.float32) for w in ws] for name, ws in out.items()}


def assign_weights(model: keras.Model, weights: dict[str, list[np.ndarray]]) -> None:
    """Load `weights` into every weighted layer of `model`, checking names and shapes."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise ValueError(f"no converted weights for layer {layer.name}")
        arrays = weights[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ValueError(f"{layer.name}: shapes {[a.shape for a in arrays]} != {expected}")
        layer.set_weights(arrays)
