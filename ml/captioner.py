"""`Captioner.caption(images) -> list[CaptionResult]`: the one thing the platform calls."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.artifact import ModelError, load_decoder, model_version
from ml.concepts import Tag, top_tags
from ml.confidence import NBEST, ConfidenceModel, confidence_features
from ml.decode import Decoder, Hypothesis
from ml.encoder_top import TOP_FILE, fine_tuned
from ml.encoders import Encoder, EncoderError, get_encoder
from ml.image_text import ImageTextProjection
from ml.images import ImageInput
from ml.paths import default_model_dir
from ml.rerank import Neighbours
from ml.rerank_score import combined
from ml.second_opinion import SecondOpinion
from ml.style_router import StyleRouter
from ml.vocab import Vocabulary, detokenize
from ml.word_vectors import WordVectors


@dataclass
class Candidate:
    text: str
    score: float  # length-normalised log-probability (what the N-best list is sorted by)
    log_prob: float  # total log-probability of the words and <end>
    words: list[str]
    attention: np.ndarray  # float32 [len(words), h, w], one softmax map per word
    # Agreement with the captions of the most similar training photos, 0-1 (ml/rerank.py); None
    # when the model does not rerank. The N-best list is then sorted by it.
    consensus: float | None = None
    # The other reranking signals (ml/rerank_score.py), when the image's style is reranked by them.
    signals: dict[str, float] = field(default_factory=dict)


@dataclass
class CaptionResult:
    image: str  # the path as given, or "<bytes>"/"<image>"
    candidates: list[Candidate] = field(default_factory=list)
    model_version: str = ""
    error: str | None = None  # set, with no candidates, when the image could not be read
    tags: list[Tag] = field(default_factory=list)  # the encoder's concepts, most probable first
    confidence: float | None = None  # P(the caption is right), None if the model is not calibrated
    # The encoder's pooled features, float32 [C] (similar images), and their projection into the
    # sentence-embedding space, float32 [384] (None without image_text.npz): same forward pass.
    features: np.ndarray | None = field(default=None, repr=False)
    image_embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def caption(self) -> str:
        return self.candidates[0].text if self.candidates else ""

    @property
    def score(self) -> float:
        return self.candidates[0].score if self.candidates else float("-inf")

    @property
    def attention(self) -> np.ndarray | None:
        return self.candidates[0].attention if self.candidates else None

    def to_json(self) -> dict[str, Any]:
        """The `python -m ml caption --jsonl` line (a stable contract)."""
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {
            "image": self.image,
            "caption": self.caption,
            "score": round(self.score, 6),
            "candidates": [{"text": c.text, "score": round(c.score, 6)} for c in self.candidates],
            "tags": [t.to_json() for t in self.tags],
            "confidence": None if self.confidence is None else round(self.confidence, 4),
        }


def _label(image: ImageInput) -> str:
    if isinstance(image, bytes):
        return "<bytes>"
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return "<image>"


class Captioner:
    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        config: dict[str, Any],
        version: str = "",
        confidence: ConfidenceModel | None = None,
        router: StyleRouter | None = None,
        image_text: ImageTextProjection | None = None,
        neighbours: Neighbours | None = None,
        style: str | None = None,
        second_opinion: SecondOpinion | None = None,
        word_vectors: WordVectors | None = None,
    ) -> None:
        self.encoder, self.decoder, self.config = encoder, decoder, config
        self.version = version
        self.confidence = confidence
        self.image_text = image_text  # photos into the sentence-embedding space (search by meaning)
        self.router = router  # picks each image's caption style; None: the decoder's one style
        self.style = style  # the style decoded in without a router (None: the model's first)
        self.neighbours = neighbours  # consensus reranking of the beam's candidates, if given
        decoding = config.get("decoding", {})
        self.consensus_neighbours = int(decoding.get("consensus_neighbours", 30))
        # The judges beside consensus (ml/rerank_score.py) and their weights per caption style: an
        # image of a style without weights is reranked by consensus alone, and its signals not computed.
        self.second_opinion, self.word_vectors = second_opinion, word_vectors
        self.rerank_weights: dict[str, dict[str, float]] = {
            str(k): {str(n): float(w) for n, w in v.items()}
            for k, v in decoding.get("rerank_weights", {}).items()
        }
        self.beam_size = int(decoding.get("beam_size", 3))
        self.max_len = int(decoding.get("max_len", 30))
        self.length_penalty = float(decoding.get("length_penalty", 0.0))

    @property
    def vocab(self) -> Vocabulary:
        return self.decoder.vocab

    @property
    def default_style(self) -> str:
        """The style an image is captioned in without a router ("" for a model without styles)."""
        return self.style or (self.vocab.styles[0] if self.vocab.styles else "")

    @property
    def needs_concepts(self) -> bool:
        """Whether decoding uses the encoder's concepts (decoder input or tag boost)."""
        return self.encoder.has_concepts and self.decoder.concepts_of is not None

    def caption(
        self,
        images: Sequence[ImageInput],
        beam_size: int | None = None,
        n_best: int | None = None,
        max_len: int | None = None,
        length_penalty: float | None = None,
        batch_size: int = 32,
        names: Sequence[str] | None = None,
    ) -> list[CaptionResult]:
        """Caption many images; unreadable ones come back with `error` set, never raise.

        Images are read `batch_size` at a time, so memory stays flat for any number of them.
        `names` are what results and error messages call the images (default: their paths).
        """
        if names is not None and len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        labels = list(names) if names is not None else [_label(im) for im in images]
        results = [CaptionResult(image=label, model_version=self.version) for label in labels]
        for start in range(0, len(images), batch_size):
            # Tags and the decoder's concept input come from the same encoder run (with a fine-tuned
            # top: from the original top beside it, see ml/encoder_top.py).
            feats, concepts, readable, errors = self.encoder.encode_readable_with_concepts(
                images[start : start + batch_size], labels[start : start + batch_size]
            )
            for i, message in errors.items():
                results[start + i].error = message
            if readable:
                # Confidence compares the first NBEST candidates, however few a caller keeps.
                wanted = None if n_best is None else max(n_best, NBEST)
                hyps = self.caption_features(feats, beam_size, wanted, max_len, length_penalty, concepts)
                sure = self.confidences(hyps, concepts, feats)
                hyps = [h[:n_best] for h in hyps] if n_best is not None else hyps
                tags = top_tags(concepts) if concepts is not None else [[] for _ in readable]
                pooled = np.asarray(feats, np.float32).mean(axis=1)  # [N, C]
                embedded = self.image_text.embed(pooled) if self.image_text is not None else None
                for j, i in enumerate(readable):
                    result = results[start + i]
                    result.candidates, result.tags = hyps[j], tags[j]
                    result.confidence = None if sure is None else float(sure[j])
                    result.features = pooled[j]
                    result.image_embedding = None if embedded is None else embedded[j]
        return results

    def caption_features(
        self,
        features: np.ndarray,
        beam_size: int | None = None,
        n_best: int | None = None,
        max_len: int | None = None,
        length_penalty: float | None = None,
        concepts: np.ndarray | None = None,
    ) -> list[list[Candidate]]:
        """Decode precomputed encoder features [N, P, C]; beam_size 1 is greedy search.

        `concepts` are the features' class probabilities, computed here when needed and not given."""
        k = self.beam_size if beam_size is None else beam_size
        max_len = max_len or self.max_len
        lp = self.length_penalty if length_penalty is None else length_penalty
        if k < 1:
            raise ValueError("beam_size must be at least 1")
        first, styles = None, [self.style] * len(features)
        if self.router is not None:
            styles = self.router.route(features)
            first = np.asarray([self.vocab.first_id(s) for s in styles])
        if k == 1:
            hyps = [[h] for h in self.decoder.greedy(features, max_len, lp, concepts, first)]
            return [[self._candidate(h) for h in per_image] for per_image in hyps]
        rerank = self.neighbours is not None and self.consensus_neighbours > 0
        # Reranking chooses among all k: the n_best asked for are cut from its order.
        hyps = self.decoder.beam(features, k, max_len, lp, k if rerank else n_best, concepts, first)
        out = [[self._candidate(h) for h in per_image] for per_image in hyps]
        if rerank:
            out = self._rerank(out, features, styles, concepts)
            out = [cands[: n_best or k] for cands in out]
        return out

    def _rerank(
        self,
        candidates: list[list[Candidate]],
        features: np.ndarray,
        styles: Sequence[str | None],
        concepts: np.ndarray | None,
    ) -> list[list[Candidate]]:
        """Each image's candidates by consensus with its nearest training photos (ml/rerank.py), plus
        its style's weighted signals (ml/rerank_score.py) when it has weights."""
        assert self.neighbours is not None
        pooled = np.asarray(features, np.float32).mean(axis=1)
        nearest = self.neighbours.nearest(pooled, styles, self.consensus_neighbours)
        stoi, unk = self.vocab.stoi, self.vocab.unk_id
        styles = [s or self.default_style for s in styles]  # (nearest() takes None as any style)
        judged = [i for i, s in enumerate(styles) if s in self.rerank_weights]
        signals = self._signals(
            [candidates[i] for i in judged], features[judged], pooled[judged], concepts, judged, styles
        )
        out = []
        for i, (cands, photos) in enumerate(zip(candidates, nearest, strict=True)):
            agree = self.neighbours.consensus(photos, [[stoi.get(w, unk) for w in c.words] for c in cands])
            for c, a in zip(cands, agree, strict=True):
                c.consensus = float(a)
            if i in signals:
                for name, values in signals[i].items():
                    for c, v in zip(cands, values, strict=True):
                        c.signals[name] = float(v)
                score = combined(agree, signals[i], self.rerank_weights[styles[i]])
            else:
                score = agree
            order = np.argsort(-np.asarray(score, np.float64), kind="stable")  # ties keep beam order
            out.append([cands[j] for j in order])
        return out

    def _signals(
        self,
        candidates: list[list[Candidate]],
        features: np.ndarray,
        pooled: np.ndarray,
        concepts: np.ndarray | None,
        images: list[int],
        styles: Sequence[str],
    ) -> dict[int, dict[str, np.ndarray]]:
        """{image index: {signal: [K]}} for the images given (`images`: their indices in the batch,
        `styles` the whole batch's caption styles)."""
        if not images:
            return {}
        out: dict[int, dict[str, np.ndarray]] = {i: {} for i in images}
        judge = self.second_opinion
        # It abstains on an image one of whose candidates uses a word it does not know.
        heard = (
            []
            if judge is None
            else [j for j, cs in enumerate(candidates) if all(judge.knows(c.words) for c in cs)]
        )
        if heard:
            given = None
            if judge.decoder.config.concept_dim:
                given = concepts[images] if concepts is not None else self.encoder.concept_probs(features)
                given = given[heard]
            said = judge.mean_log_probs(
                features[heard],
                [[c.words for c in candidates[j]] for j in heard],
                given,
                [styles[images[j]] for j in heard],
            )
            for j, values in zip(heard, said, strict=True):
                out[images[j]]["second_opinion"] = values
        if self.word_vectors is not None:
            wv = self.word_vectors
            unit = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            photos = self.image_text.embed(pooled) if self.image_text is not None else None
            for j, (i, cands) in enumerate(zip(images, candidates, strict=True)):
                texts = [c.text for c in cands]
                query = [wv.query_vector(t) for t in texts]
                out[i]["word_support"] = np.asarray([0.0 if q is None else float(q @ unit[j]) for q in query])
                if photos is not None and wv.sentences is not None:
                    sent = [wv.sentence_vector(t) for t in texts]
                    out[i]["sentence_match"] = np.asarray(
                        [0.0 if v is None else float(v @ photos[j]) for v in sent]
                    )
        return out

    def confidences(
        self, candidates: list[list[Candidate]], concepts: np.ndarray | None, features: np.ndarray
    ) -> np.ndarray | None:
        """Each image's confidence in its best caption [N], or None if the model is not calibrated."""
        if self.confidence is None:
            return None
        return self.confidence.predict(confidence_features(candidates, concepts, features))

    def _candidate(self, h: Hypothesis) -> Candidate:
        words = self.vocab.decode(h.ids)
        gh, gw, _ = self.encoder.feature_shape
        return Candidate(detokenize(words), h.score, h.log_prob, words, h.attention.reshape(-1, gh, gw))


def load_captioner(path: str | os.PathLike | None = None, style: str | None = None) -> Captioner:
    """The model in directory `path`, or the project's default model; `style` overrides the caption
    style it decodes in (for a model trained on several sources, see Vocabulary)."""
    directory = Path(path) if path is not None else default_model_dir()
    if path is None and not (directory / "config.json").is_file():
        raise ModelError(
            f"no default model at {directory}: pass --model DIR (train one with `python -m ml train`)"
        )
    config, decoder, vocab = load_decoder(directory)
    enc = config["encoder"]
    encoder = get_encoder(
        enc["name"], image_size=enc["image_size"], weights=enc.get("weights"), **enc.get("options", {})
    )
    if enc.get("tuned_blocks"):  # the encoder's top was fine-tuned with the decoder
        try:
            encoder = fine_tuned(encoder, int(enc["tuned_blocks"]), directory / TOP_FILE)
        except EncoderError as exc:
            raise ModelError(f"{directory}: {exc}") from exc
    if list(encoder.feature_shape) != list(enc["feature_shape"]):
        raise ModelError(
            f"{directory}: encoder gives {encoder.feature_shape}, model expects {enc['feature_shape']}"
        )
    concepts_of = encoder.concept_probs if decoder.config.concept_dim else None
    if concepts_of is not None and not encoder.has_concepts:
        raise ModelError(f"{directory}: the model needs concepts, which encoder {encoder.name} cannot give")
    decoding = config.get("decoding", {})
    # Models from before repeat blocking decode as they were scored: it is off unless the model says.
    try:
        inference = Decoder(
            decoder,
            vocab,
            concepts_of,
            style or decoding.get("style"),
            decoding.get("block_repeats", False),
            float(decoding.get("tag_boost", 0.0)),
        )
    except ValueError as exc:  # a style the model does not have
        raise ModelError(f"{directory}: {exc}") from exc
    try:
        confidence = ConfidenceModel.load(directory)
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{directory}: unusable {exc}") from exc
    router = None if style else StyleRouter.load(directory)  # a style asked for is used for all
    try:
        image_text = ImageTextProjection.load(directory)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"{directory}: unusable image_text.npz ({exc})") from exc
    try:
        neighbours = Neighbours.load(directory)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"{directory}: unusable neighbours.npz ({exc})") from exc
    second_opinion, word_vectors = None, None
    if decoding.get("rerank_weights"):  # only a model reranked by them needs its judges
        second_opinion = SecondOpinion.load(directory)
        if second_opinion is not None and second_opinion.feature_shape != list(encoder.feature_shape):
            raise ModelError(f"{directory}: its second opinion reads other features than the encoder's")
        try:
            word_vectors = WordVectors.load(directory)
        except (ValueError, KeyError, OSError) as exc:
            raise ModelError(f"{directory}: unusable word_vectors.npz ({exc})") from exc
    return Captioner(
        encoder,
        inference,
        config,
        model_version(directory),
        confidence,
        router,
        image_text,
        neighbours,
        style or decoding.get("style"),
        second_opinion,
        word_vectors,
    )
