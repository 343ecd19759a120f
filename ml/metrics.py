"""Caption metrics with the standard coco-caption definitions (via pycocoevalcap).

BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D), reported on a 0-100 scale. SPICE is left out
because it downloads Stanford models on first use.

We drive the two Java pieces (PTB tokenizer, METEOR) ourselves instead of through
pycocoevalcap's wrappers: those write temp files into site-packages, hang when a pipe
fills or the JVM dies, mis-align lines on exotic whitespace, and leave the METEOR JVM
running. The scoring maths is still pycocoevalcap's (and METEOR's own jar), so numbers
match published coco-caption results.

CIDEr is corpus-relative (IDF over the references you pass in): score a whole split at
once, never a single image (one image always gets CIDEr 0).
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import pycocoevalcap
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")

# pycocoevalcap is a namespace package (no __init__), so take its first path entry.
_PKG_DIR = Path(next(iter(pycocoevalcap.__path__)))
_TOKENIZER_JAR = _PKG_DIR / "tokenizer" / "stanford-corenlp-3.4.1.jar"
_METEOR_JAR = _PKG_DIR / "meteor" / "meteor-1.5.jar"

# coco-caption drops these PTB tokens after tokenizing.
_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Generous: the first METEOR line waits for the JVM to load its ~60 MB paraphrase table,
# which takes ~10 s on an idle core and much longer on a busy shared machine.
DEFAULT_TIMEOUT_S = 600.0


class MetricsError(RuntimeError):
    """Scoring could not run (Java missing, a Java tool failed or timed out)."""


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise MetricsError(
            "caption metrics need Java (the PTB tokenizer and METEOR are Java programs) but `java` "
            "is not on PATH; install a JRE, e.g. `apt-get install default-jre-headless`"
        )
    for jar in (_TOKENIZER_JAR, _METEOR_JAR):
        if not jar.is_file():
            raise MetricsError(f"pycocoevalcap is missing {jar}; reinstall it (`pip install pycocoevalcap`)")
    return java


def _one_line(text: str) -> str:
    # str.split() also breaks on \x0b, \x0c, \x1c-\x1f, \x85 and \u2028, which the Java
    # tokenizer treats as line ends; collapsing them keeps one caption per line.
    return " ".join(text.split())


def validate(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> None:
    """Raise ValueError unless both dicts cover the same images with usable captions."""
    if not isinstance(references, Mapping) or not isinstance(hypotheses, Mapping):
        raise ValueError("references and hypotheses must be dicts keyed by image id")
    if not references:
        raise ValueError("nothing to score: references is empty")
    missing = [k for k in references if k not in hypotheses]
    extra = [k for k in hypotheses if k not in references]
    if missing or extra:
        raise ValueError(
            "references and hypotheses must have the same image ids: "
            f"{len(missing)} without a hypothesis (e.g. {missing[:3]}), "
            f"{len(extra)} without references (e.g. {extra[:3]})"
        )
    for key, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise ValueError(f"references[{key!r}] must be a list of strings, got {type(refs).__name__}")
        if not refs:
            raise ValueError(f"references[{key!r}] is empty; every image needs at least one reference")
        for ref in refs:
            if not isinstance(ref, str):
                raise ValueError(f"references[{key!r}] holds a {type(ref).__name__}, not a string")
            if not ref.strip():
                raise ValueError(f"references[{key!r}] holds a blank reference caption")
        hyp = hypotheses[key]
        if not isinstance(hyp, str):
            raise ValueError(f"hypotheses[{key!r}] must be one string, got {type(hyp).__name__}")


def ptb_tokenize(sentences: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """Lower-case PTB tokenization with punctuation removed, exactly as coco-caption does it."""
    java = _java()
    lines = [_one_line(s) for s in sentences]
    # Our own temp dir (not pycocoevalcap's package dir, which may be read-only or shared).
    with tempfile.TemporaryDirectory(prefix="imgcap-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_text("\n".join(lines), encoding="utf-8")
        cmd = [
            java,
            "-cp",
            str(_TOKENIZER_JAR),
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
            "-encoding",
            "UTF-8",
            str(path),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise MetricsError(f"PTB tokenizer timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        raise MetricsError(f"PTB tokenizer failed ({proc.returncode}): {err}")
    out = proc.stdout.decode("utf-8", errors="replace").split("\n")
    # Blank captions at the end may or may not leave trailing empty lines; anything else is a mis-parse.
    while len(out) > len(lines) and not out[-1].strip():
        out.pop()
    while len(out) < len(lines) and not lines[len(out)]:
        out.append("")
    if len(out) != len(lines):
        raise MetricsError(f"PTB tokenizer returned {len(out)} lines for {len(lines)} captions")
    return [" ".join(w for w in line.split() if w not in _PUNCTUATION) for line in out]


class _Meteor:
    """One METEOR 1.5 JVM in `-stdio` mode, with timeouts and guaranteed shutdown."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        # Same METEOR options as coco-caption. SerialGC: half the resident memory of the default
        # collector (~0.6 vs ~1.1 GB) at the same speed, which matters on shared machines.
        java_opts = ["-Xmx2G", "-XX:+UseSerialGC", "-Dfile.encoding=UTF-8"]
        cmd = [_java(), *java_opts, "-jar", str(_METEOR_JAR), "-", "-", "-stdio", "-l", "en", "-norm"]
        # cwd = the jar's folder so its relative data/ lookup works whatever the caller's cwd;
        # stderr goes to a file, since an unread stderr pipe can fill and freeze the JVM.
        self._proc = subprocess.Popen(
            cmd, cwd=_METEOR_JAR.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        # A reader thread drains stdout continuously: no pipe deadlock, and reads can time out.
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _fail(self, what: str) -> MetricsError:
        self._stderr.seek(0)
        err = self._stderr.read()[-2000:].decode(errors="replace").strip()
        return MetricsError(f"METEOR {what}" + (f"; its stderr ends with:\n{err}" if err else ""))

    def _send(self, lines: list[str]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise self._fail("process exited early") from exc

    def _read_lines(self, count: int, deadline: float) -> list[str]:
        """Next `count` output lines, each checked to be a non-empty row of numbers."""
        rows = []
        for _ in range(count):
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._fail(f"timed out after {self._timeout:.0f} s") from None
            if line is None:
                raise self._fail(f"exited with code {self._proc.wait()}")
            text = line.decode("utf-8", errors="replace").strip()
            try:
                if not [float(v) for v in text.split()]:
                    raise ValueError
            except ValueError:
                raise self._fail(f"returned an unparsable line {text[:200]!r}") from None
            rows.append(text)
        return rows

    def score(self, hypotheses: list[str], references: list[list[str]]) -> float:
        """Corpus METEOR of tokenized captions (same protocol as coco-caption's wrapper)."""
        deadline = time.monotonic() + self._timeout

        def clean(text: str) -> str:
            # "|||" is METEOR's field separator; strip it from every field, not just the hypothesis.
            return _one_line(text.replace("|||", " "))

        self._send(
            [
                " ||| ".join(["SCORE", *(clean(r) for r in refs), clean(hyp)])
                for hyp, refs in zip(hypotheses, references, strict=True)
            ]
        )
        stats = self._read_lines(len(hypotheses), deadline)
        self._send(["EVAL" + "".join(" ||| " + row for row in stats)])
        # One score per segment, then the corpus score.
        return float(self._read_lines(len(hypotheses) + 1, deadline)[-1])

    def close(self, kill: bool = False) -> None:
        """Stop the JVM: EOF on stdin lets an idle one exit; `kill` for one that may be stuck."""
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=0 if kill else 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


def _tokenized(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str], timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[list[str], dict[int, list[str]], dict[int, list[str]]]:
    """(keys, tokenized references, tokenized hypotheses), ids being positions in `keys`:
    coco-caption's input form. References and hypotheses are tokenized in one JVM run."""
    validate(references, hypotheses)
    keys = list(references)
    flat = [r for k in keys for r in references[k]] + [hypotheses[k] for k in keys]
    tokens = ptb_tokenize(flat, timeout=timeout)
    gts: dict[int, list[str]] = {}
    pos = 0
    for i, k in enumerate(keys):
        gts[i] = tokens[pos : pos + len(references[k])]
        pos += len(references[k])
    return keys, gts, {i: [tokens[pos + i]] for i in range(len(keys))}


class CaptionScorer:
    """Keeps one METEOR JVM alive across several scoring calls (e.g. once per epoch).

    Use as a context manager, or call close(); the JVM is started lazily on the first score.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._meteor: _Meteor | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._meteor is not None:
                self._meteor.close()
                self._meteor = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def score(
        self, references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
    ) -> dict[str, float]:
        """All metrics in METRIC_NAMES, 0-100, for `hypotheses[id]` against `references[id]`."""
        _, gts, res = _tokenized(references, hypotheses, self.timeout)
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        with self._lock:
            if self._meteor is None:
                self._meteor = _Meteor(self.timeout)
            try:
                meteor = self._meteor.score([res[i][0] for i in res], [gts[i] for i in res])
            except BaseException:
                # A failed or interrupted exchange leaves the stream out of step: never reuse it.
                self._meteor.close(kill=True)
                self._meteor = None
                raise
        values = [*bleu, meteor, rouge, cider]
        return {name: 100.0 * float(v) for name, v in zip(METRIC_NAMES, values, strict=True)}


def per_image_cider(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> dict[str, float]:
    """CIDEr-D of each image's caption (0-10 scale, as coco-caption's per-image scores), with the
    document frequencies of the whole set, as the corpus score uses them."""
    keys, gts, res = _tokenized(references, hypotheses)
    _, scores = Cider().compute_score(gts, res)
    return {k: float(v) for k, v in zip(keys, scores, strict=True)}


def score_captions(
    references: dict[str, list[str]], hypotheses: dict[str, str], timeout: float = DEFAULT_TIMEOUT_S
) -> dict[str, float]:
    """Score one caption per image against its references; keys are METRIC_NAMES, values 0-100.

    Needs `java` on PATH. Raises ValueError for malformed input, MetricsError if Java fails.
    Starts and stops its own METEOR JVM (~10 s); use CaptionScorer to reuse one across calls.
    """
    with CaptionScorer(timeout=timeout) as scorer:
        return scorer.score(references, hypotheses)


__all__ = [
    "METRIC_NAMES",
    "CaptionScorer",
    "MetricsError",
    "per_image_cider",
    "ptb_tokenize",
    "score_captions",
    "validate",
]
