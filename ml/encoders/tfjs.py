"""Reading TF.js layers models shipped inside JavaScript bundles (as npm packages do).

A bundle exports the model JSON as a JS object literal and each weight shard as a base64
string; weights may be uint8/uint16-quantised (`q * scale + min`). Parsed with a small
literal parser: nothing from the package is executed.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np

from ml.encoders.base import EncoderError

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<punct>[{}\[\]:,])
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<bang>![01])
    | (?P<word>[A-Za-z_$][\w$]*)
    )""",
    re.VERBOSE,
)
_WORDS = {"null": None, "true": True, "false": False}


def parse_js_literal(text: str, pos: int = 0) -> tuple[Any, int]:
    """Parse the minified JS object literal starting at `pos` -> (Python value, end position).

    Handles the subset a minifier emits for a JSON document: unquoted keys, `.5`-style
    numbers, `!0`/`!1` booleans. We parse rather than run the bundle with node so that no
    code from the package is ever executed.
    """

    def token() -> tuple[str, str]:
        nonlocal pos
        m = _TOKEN.match(text, pos)
        if not m:
            raise EncoderError(f"cannot parse the TF.js model literal at {pos}: {text[pos : pos + 40]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        return kind, m.group(kind)

    def value(kind: str, tok: str) -> Any:
        if kind == "str":
            body = tok[1:-1] if tok[0] == '"' else tok[1:-1].replace('"', '\\"').replace("\\'", "'")
            return json.loads(f'"{body}"')
        if kind == "num":
            return float(tok) if any(c in tok for c in ".eE") else int(tok)
        if kind == "bang":
            return tok == "!0"  # minifiers write true as !0 and false as !1
        if kind == "word" and tok in _WORDS:
            return _WORDS[tok]
        if tok == "{":
            obj: dict[str, Any] = {}
            kind, tok = token()
            while tok != "}":
                key = value(kind, tok) if kind == "str" else tok
                if token()[1] != ":":
                    raise EncoderError(f"expected ':' after key {key!r} in the TF.js model literal")
                obj[str(key)] = value(*token())
                kind, tok = token()
                if tok == ",":
                    kind, tok = token()
            return obj
        if tok == "[":
            arr: list[Any] = []
            kind, tok = token()
            while tok != "]":
                arr.append(value(kind, tok))
                kind, tok = token()
                if tok == ",":
                    kind, tok = token()
            return arr
        raise EncoderError(f"unexpected token {tok!r} in the TF.js model literal")

    result = value(*token())
    return result, pos


def parse_model_bundle(js: str) -> dict[str, Any]:
    """`model.min.js` -> the TF.js model.json dict (modelTopology + weightsManifest)."""
    key = js.find("modelTopology")
    start = js.rfind("{", 0, key)
    if key < 0 or start < 0:
        raise EncoderError("no modelTopology found in the nsfwjs model bundle")
    model, _ = parse_js_literal(js, start)
    if "weightsManifest" not in model:
        raise EncoderError("the nsfwjs model bundle has no weightsManifest")
    return model


_SHARD = re.compile(r'\.exports\s*=\s*"([A-Za-z0-9+/=]+)"')


def decode_shard_bundle(js: str) -> bytes:
    """`groupX-shardKofN.min.js` -> the raw shard bytes it embeds as base64."""
    m = _SHARD.search(js)
    if not m:
        raise EncoderError("no base64 weight shard found in an nsfwjs shard bundle")
    return base64.b64decode(m.group(1))


def dequantise(manifest: list[dict[str, Any]], shards: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Unpack every weight of a TF.js weightsManifest: quantised ints -> q * scale + min."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join(shards[p] for p in group["paths"])  # a group's weights run across its shards
        offset = 0
        for spec in group["weights"]:
            shape = tuple(spec["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            quant = spec.get("quantization")
            stored = np.dtype(quant["dtype"] if quant else spec["dtype"])
            raw = np.frombuffer(buf, dtype=stored, count=count, offset=offset)
            offset += count * stored.itemsize
            if quant and stored.kind == "u":
                # float64 arithmetic, like TF.js' own JS numbers, then cast once.
                values = raw.astype(np.float64) * quant["scale"] + quant["min"]
            else:
                values = raw
            weights[spec["name"]] = values.astype(np.float32).reshape(shape)
        if offset != len(buf):
            raise EncoderError(f"weight group {group['paths'][0]}: {len(buf) - offset} unread bytes")
    return weights
