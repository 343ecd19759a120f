"""Caption tokenisation and the vocabulary saved with every model."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

# The possessive is a token of its own, as the metrics' PTB tokenizer makes it: Flickr8k writes
# "a horse 's lead", other data "a horse's lead"; both become ["horse", "'s"].
_POSSESSIVE = re.compile(r"\s*'s\b")
# Keep letters, digits and in-word apostrophes/hyphens; everything else separates words.
_WORD = re.compile(r"'s|[a-z0-9]+(?:['\-][a-z0-9]+)*")


# Words that carry no content of their own: they may recur close together in a caption ("a man
# and a woman"), and comparing captions with tags ignores them.
FUNCTION_WORDS = frozenset(
    {
        *("a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "with", "by", "for", "from"),
        *("into", "onto", "over", "under", "near", "behind", "through", "while", "is", "are"),
        *("his", "her", "their", "its", "'s", "some", "two", "three"),
    }
)


def tokenize(text: str) -> list[str]:
    """Lower-cased words without punctuation: "A dog's ball." -> ['a', 'dog', "'s", 'ball']."""
    return _WORD.findall(_POSSESSIVE.sub(" 's", text.lower()))


def detokenize(words: Iterable[str]) -> str:
    """Caption text people read: words joined by spaces, the possessive back on its word ("man's")."""
    return " ".join(words).replace(" 's", "'s")


def style_token(name: str) -> str:
    """The first decoder input of a caption in `name`'s style (e.g. "<style:flickr8k>")."""
    return f"<style:{name}>"


class Vocabulary:
    """Index <-> word; ids 0..3 are <pad>, <start>, <end>, <unk>, then the words, then style tokens.

    A style token (one per training source, e.g. Flickr8k's descriptions and Conceptual
    Captions' alt text) replaces <start> as a caption's first input, so one decoder learns
    both styles and is asked for one of them at inference. Models without styles start
    every caption with <start>.
    """

    def __init__(self, words: Iterable[str], styles: Iterable[str] = ()) -> None:
        self.styles: list[str] = list(styles)
        tokens = {style_token(s) for s in self.styles}
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS and w not in tokens]
        self.itos += [style_token(s) for s in self.styles]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(
        cls, captions: Iterable[str], max_size: int = 10000, min_count: int = 1, styles: Iterable[str] = ()
    ) -> Vocabulary:
        """The `max_size` (specials included, styles not) most frequent words seen `min_count` times."""
        counts = Counter(w for c in captions for w in tokenize(c))
        ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[: max(0, max_size - len(SPECIALS))], styles)

    def __len__(self) -> int:
        return len(self.itos)

    def first_id(self, style: str | None = None) -> int:
        """The id a caption starts from: `style`'s token, or <start> when the model has no styles."""
        if not self.styles:
            return self.start_id
        if style is None:
            style = self.styles[0]
        try:
            return self.stoi[style_token(style)]
        except KeyError:
            raise ValueError(
                f"unknown caption style {style!r}; this model has {', '.join(self.styles)}"
            ) from None

    @property
    def non_word_ids(self) -> list[int]:
        """Ids a caption never says: <pad>, <start>, <unk> and the style tokens."""
        return [self.pad_id, self.start_id, self.unk_id, *(self.stoi[style_token(s)] for s in self.styles)]

    def encode(self, text: str, max_len: int | None = None, style: str | None = None) -> list[int]:
        """<start> (or the style token) w1 .. wn <end>, words cut to `max_len` (<start>/<end> not counted)."""
        ids = [self.stoi.get(w, self.unk_id) for w in tokenize(text)]
        if max_len is not None:
            ids = ids[:max_len]
        return [self.first_id(style), *ids, self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first <end>; specials other than <unk> and style tokens dropped."""
        skip = {self.pad_id, self.start_id, *(self.stoi[style_token(s)] for s in self.styles)}
        words = []
        for i in ids:
            if i == self.end_id:
                break
            if i in skip:
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return words

    def save(self, path: str | Path) -> None:
        words = self.itos[len(SPECIALS) : len(self.itos) - len(self.styles)]
        data: dict[str, list[str]] = {"words": words}
        if self.styles:
            data["styles"] = self.styles
        Path(path).write_text(json.dumps(data, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        data = json.loads(Path(path).read_text())
        return cls(data["words"], data.get("styles", ()))
