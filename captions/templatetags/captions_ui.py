"""How the pages put things about captions in plain words (`{% load captions_ui %}`): the model's
confidence as "likely right" / "unsure" / "probably wrong", the model version's friendly name, captions
as sentences, and whether a caption needs review. The stored text and the API stay as they are."""

from __future__ import annotations

import re

from django import template
from django.conf import settings
from django.utils.html import format_html

from captions import selectors
from captions.models import Caption, ModelVersion

register = template.Library()

CONFIDENCE_WORDS = {"high": "likely right", "medium": "unsure", "low": "probably wrong"}

# The parts of a version name (`ml.artifact.model_version`: "imgcap-broad-lite0-c07eb37d35") that
# name the encoder or the weights' hash rather than what the model was trained on.
_ENCODER_TOKENS = frozenset({"lite0", "lite2", "lite4", "inception", "inceptionv3", "incv3", "v3"})
_HASH = re.compile(r"[0-9a-f]{6,}")
_TRAINED_ON = {"broad": "Broad", "flickr8k": "Flickr8k", "flickr30k": "Flickr30k", "coco": "COCO"}
_ENCODERS = {
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "efficientnet_lite4": "EfficientNet-Lite4",
    "inception_v3": "InceptionV3",
    "inception_v3_offline": "InceptionV3",
}
_SENTENCE_END = ".!?…"


@register.filter
def confidence_level(confidence: float | None) -> str:
    """ "high", "medium" or "low" by the IMGCAP_CONFIDENCE_HIGH / IMGCAP_NEEDS_REVIEW_BELOW thresholds;
    "" when the caption has no confidence (people's captions, older models)."""
    if confidence is None:
        return ""
    if confidence >= settings.IMGCAP_CONFIDENCE_HIGH:
        return "high"
    return "low" if confidence < settings.IMGCAP_NEEDS_REVIEW_BELOW else "medium"


@register.filter
def confidence_words(confidence: float | None) -> str:
    """The confidence as people say it: "likely right", "unsure", "probably wrong" ("" for none)."""
    return CONFIDENCE_WORDS.get(confidence_level(confidence), "")


@register.filter
def confidence_percent(confidence: float | None) -> int:
    """0-100, for the width of the confidence bar."""
    return 0 if confidence is None else max(0, min(100, round(100 * confidence)))


@register.filter
def model_label(version: ModelVersion | None) -> str:
    """A name for people: "Broad model (EfficientNet-Lite0), Dec 2026" rather than
    "imgcap-broad-lite0-c07eb37d35" (what it was trained on, its encoder, when it came)."""
    if version is None:
        return "the model"
    parts = version.name.lower().split("-")
    if parts and parts[0] == "imgcap":
        parts = parts[1:]
    words = [p for p in parts if p and p not in _ENCODER_TOKENS and not _HASH.fullmatch(p)]
    trained_on = " ".join(_TRAINED_ON.get(w, w) for w in words) or "Captioning"
    trained_on = trained_on[0].upper() + trained_on[1:]
    label = trained_on if "model" in words else f"{trained_on} model"
    encoder = _ENCODERS.get(version.encoder, version.encoder)
    if encoder:
        label += f" ({encoder})"
    if version.created_at is not None:
        label += f", {version.created_at:%b %Y}"
    return label


@register.filter
def sentence(text: str | None) -> str:
    """A caption as a sentence: a capital first letter and a full stop ("a dog runs" → "A dog runs.")."""
    clean = (text or "").strip()
    if not clean:
        return ""
    clean = clean[0].upper() + clean[1:]
    end = clean.rstrip("\"'”’)")[-1:]
    return clean if end and end in _SENTENCE_END else clean + "."


@register.filter
def needs_review(caption: Caption | None) -> bool:
    """Whether the shown caption is the model's and it is probably wrong (selectors.needs_review)."""
    return selectors.needs_review(caption)


@register.simple_tag
def confidence_data() -> str:
    """The thresholds as data attributes, for the scripts that show confidences (imgcap.js)."""
    return format_html(
        'data-confidence-high="{}" data-needs-review-below="{}"',
        settings.IMGCAP_CONFIDENCE_HIGH,
        settings.IMGCAP_NEEDS_REVIEW_BELOW,
    )
