"""Caption tokenisation and the vocabulary saved with every model."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

# Keep letters, digits and in-word apostrophes/hyphens; everything else separates words.
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased words without punctuation: 'A dog, running.' -> ['a', 'dog', 'running']."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Index <-> word; ids 0..3 are <pad>, <start>, <end>, <unk>."""

    def __init__(self, words: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: Iterable[str], max_size: int = 10000, min_count: int = 1) -> Vocabulary:
        """The `max_size` (specials included) most frequent words seen at least `min_count` times."""
        counts = Counter(w for c in captions for w in tokenize(c))
        ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[: max(0, max_size - len(SPECIALS))])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """<start> w1 .. wn <end>, words cut to `max_len` (the <start>/<end> not counted)."""
        ids = [self.stoi.get(w, self.unk_id) for w in tokenize(text)]
        if max_len is not None:
            ids = ids[:max_len]
        return [self.start_id, *ids, self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first <end>, specials other than <unk> dropped."""
        words = []
        for i in ids:
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return words

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": self.itos[len(SPECIALS) :]}, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls(json.loads(Path(path).read_text())["words"])
