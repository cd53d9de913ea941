"""CTC decoding: (T, V) log-probs in, text and timed words out.

Greedy decoding takes the most likely symbol in each frame, merges repeats and drops blanks.
Beam search (pyctcdecode) keeps the `beam_width` best prefixes and, with a KenLM n-gram model,
ranks them as the DS2 paper does:  log P_ctc(y|x) + alpha * log P_lm(y) + beta * words(y).
Without an LM file it runs a beam search on the acoustic scores alone; given an LM file but no kenlm,
it does the same and warns. Before the search, `blank_offset` (tuned on dev with the LM weights) can
lower the blank's log-probability in every frame, the frame renormalised: a network that hedges with
blanks then loses fewer letters to them.
"""

import contextlib
import importlib.util
import json
import logging
import threading
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from pyctcdecode import build_ctcdecoder
from pyctcdecode.language_model import _prepare_unigram_set

from .text import ALPHABET, BLANK_ID, SPACE_ID, encode, normalize_text

LABELS = ["" if i == BLANK_ID else c for i, c in enumerate(ALPHABET)]  # pyctcdecode's blank is ""
HOTWORD_WEIGHT = 10.0  # pyctcdecode's default bonus for a hotword


@dataclass(frozen=True)
class Word:
    """A recognised word: start and end in seconds, confidence in [0, 1]."""
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Decoded:
    text: str
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Beam:
    """A beam-search hypothesis and its scores (natural log): total = acoustic + lm.

    acoustic: CTC log-probability of the text (of the log-probs after `blank_offset`); lm: alpha *
    log P_lm + beta * words + hotword bonus.
    """
    text: str
    acoustic_score: float
    lm_score: float
    total_score: float


class LMError(ValueError):
    """An LM folder whose lm.json cannot be read."""


def finite(name: str, value) -> float:
    """`value` as a float; a ValueError naming `name` unless it is a finite number."""
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}={value}: must be a finite number")
    return value


def hotword_list(hotwords) -> list[str]:
    """Words or phrases to favour, normalised to the alphabet; those with nothing left are dropped.
    One string is one hotword (not its letters)."""
    return [w for w in map(normalize_text, [hotwords] if isinstance(hotwords, str) else hotwords) if w]


@dataclass(frozen=True)
class LMParams:
    alpha: float = 0.5  # weight of the LM log-probability
    beta: float = 1.0  # bonus per word, against the LM's preference for short transcripts
    beam_width: int = 64  # prefixes kept after each frame
    beam_prune_logp: float = -10.0  # drop prefixes this far below the best one
    token_min_logp: float = -5.0  # ignore symbols less likely than this in a frame (unless the best)
    unk_score_offset: float = -10.0  # log10 penalty for a word the LM does not know
    blank_offset: float = 0.0  # added to the blank's log-prob in each frame before the search

    def __post_init__(self):
        finite("blank_offset", self.blank_offset)


def offset_blank(log_probs: np.ndarray, offset: float) -> np.ndarray:
    """(T, V) log-probs with `offset` added to the blank's column and each frame renormalised (a copy;
    the input itself when offset is 0)."""
    if not offset:
        return log_probs
    shifted = np.array(log_probs, dtype=np.float32)
    shifted[:, BLANK_ID] += offset
    return shifted - np.logaddexp.reduce(shifted, axis=1, keepdims=True)


def greedy_path(log_probs: np.ndarray) -> np.ndarray:
    """(T, V) log-probs -> (T,) the most likely symbol id in each frame."""
    return np.asarray(log_probs).argmax(axis=-1)


def _word(word: str, probs: np.ndarray, start: int, end: int, frame_seconds: float, time_offset: float) -> Word:
    """The word spoken in frames [start, end); confidence is the mean over those frames of the best
    probability among its letters and the blank (for the greedy path: the mean max-probability)."""
    ids = [BLANK_ID, *encode(word)]
    confidence = float(probs[start:end][:, ids].max(axis=1).mean())
    return Word(word, time_offset + start * frame_seconds, time_offset + end * frame_seconds, confidence)


def greedy_decode(log_probs: np.ndarray, frame_seconds: float, time_offset: float = 0.0) -> Decoded:
    """Best-path decoding of (T, V) log-probs; frame t covers [t, t+1) * frame_seconds + time_offset.

    A word starts at the first frame of its first letter and ends after the last frame of its last.
    """
    path = greedy_path(log_probs)
    if path.size == 0:
        return Decoded("", ())
    probs = np.exp(log_probs)
    boundaries = np.flatnonzero(np.diff(path)) + 1
    spans, letters = [], []  # spans: (word, first frame, end frame)
    for run_start, run_end in zip(np.r_[0, boundaries], np.r_[boundaries, path.size]):
        symbol = path[run_start]
        if symbol == SPACE_ID and letters:
            spans.append(("".join(letters), word_start, word_end))
            letters = []
        elif symbol not in (BLANK_ID, SPACE_ID):
            word_start = run_start if not letters else word_start
            letters.append(ALPHABET[symbol])
            word_end = run_end
    if letters:
        spans.append(("".join(letters), word_start, word_end))
    words = tuple(_word(w, probs, s, e, frame_seconds, time_offset) for w, s, e in spans)
    return Decoded(" ".join(w.word for w in words), words)


class _Prefixes:
    """Stands in for pyctcdecode's pygtrie.CharTrie of the vocabulary, of which its LanguageModel
    only asks has_node(prefix) (pyctcdecode 0.5, pinned). A set of every prefix builds in 0.3 s
    instead of 2.4 s for 190k words, searches faster, and needs no slow teardown at exit."""

    def __init__(self, words):
        self.prefixes = {w[:i] for w in words for i in range(len(w) + 1)}

    def has_node(self, prefix: str) -> int:
        return int(prefix in self.prefixes)


@contextlib.contextmanager
def _quiet_pyctcdecode(quiet: bool):
    """Silence pyctcdecode's warning about a small vocabulary while the real one is set after."""
    logger = logging.getLogger("pyctcdecode")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class BeamDecoder:
    """CTC prefix beam search with an optional KenLM n-gram model (pyctcdecode).

    `lm_path`: a KenLM .bin or .arpa file; `unigrams`: the LM's vocabulary (read from an .arpa when
    not given). The LM is loaded once: alpha and beta passed to `decode` are set on it in place.
    """

    def __init__(self, lm_path: str | Path | None = None, unigrams: list[str] | None = None,
                 params: LMParams = LMParams()):
        if lm_path is not None and not Path(lm_path).is_file():
            raise FileNotFoundError(f"language model not found: {lm_path}")
        self.params = params
        self.has_lm = lm_path is not None and importlib.util.find_spec("kenlm") is not None
        if lm_path is not None and not self.has_lm:  # asked for an LM and cannot have it; no LM file is a choice
            warnings.warn("beam search runs without a language model: kenlm is not installed (pip install kenlm)",
                          stacklevel=2)
        fast_vocabulary = self.has_lm and unigrams is not None
        with _quiet_pyctcdecode(fast_vocabulary):
            self._decoder = build_ctcdecoder(LABELS, str(lm_path) if self.has_lm else None,
                                             unigrams[:1000] if fast_vocabulary else unigrams,
                                             alpha=float(params.alpha), beta=float(params.beta),
                                             unk_score_offset=float(params.unk_score_offset))
        if fast_vocabulary:
            lm = self._decoder._language_model
            lm._unigram_set = _prepare_unigram_set(unigrams, lm._kenlm_model)
            lm._char_trie = _Prefixes(lm._unigram_set)
        # alpha, beta and unk_score_offset live on the one LM object: searches with the weights it
        # holds run side by side (a live session's final decode beside its next partial one); a
        # search with other weights waits until none is running, and new ones wait behind it.
        self._weights = (float(params.alpha), float(params.beta), float(params.unk_score_offset))
        self._searches = 0  # running with self._weights
        self._waiting = 0  # waiting to change them
        self._turn = threading.Condition()

    @classmethod
    def from_dir(cls, lm_dir: str | Path) -> "BeamDecoder":
        """Load lm_dir/lm.json: {"lm": "lm.bin", "unigrams": "unigrams.txt", "alpha": ..., "beta": ..., ...}."""
        lm_dir = Path(lm_dir)
        try:
            config = json.loads((lm_dir / "lm.json").read_text(encoding="utf-8"))
            params = LMParams(**{f.name: f.type(config[f.name]) for f in fields(LMParams) if f.name in config})
            lm_file = lm_dir / config["lm"]
        except (ValueError, KeyError, TypeError) as e:
            raise LMError(f"{lm_dir / 'lm.json'}: not a valid LM config ({type(e).__name__}: {e})") from None
        unigrams = (lm_dir / config["unigrams"]).read_text(encoding="utf-8").split() if config.get("unigrams") else None
        return cls(lm_file, unigrams, params)

    def _search(self, log_probs, alpha, beta, beam_width, hotwords, hotword_weight, prune_history,
                unk_score_offset=None, blank_offset=None):
        p = self.params
        blank_offset = p.blank_offset if blank_offset is None else finite("blank_offset", blank_offset)
        scores = offset_blank(np.asarray(log_probs, dtype=np.float32), blank_offset)
        hotwords, hotword_weight = hotword_list(hotwords), finite("hotword_weight", hotword_weight)
        weights = (float(p.alpha if alpha is None else alpha), float(p.beta if beta is None else beta),
                   float(p.unk_score_offset if unk_score_offset is None else unk_score_offset))
        with self._turn:
            if weights != self._weights or self._waiting:
                self._waiting += 1
                self._turn.wait_for(lambda: self._searches == 0)
                self._waiting -= 1
                if weights != self._weights:
                    self._decoder.reset_params(alpha=weights[0], beta=weights[1], unk_score_offset=weights[2])
                    self._weights = weights
            self._searches += 1
        try:
            return self._decoder.decode_beams(
                scores, beam_width=beam_width or p.beam_width,
                beam_prune_logp=p.beam_prune_logp, token_min_logp=p.token_min_logp, prune_history=prune_history,
                hotwords=hotwords or None, hotword_weight=hotword_weight)
        finally:
            with self._turn:
                self._searches -= 1
                self._turn.notify_all()

    def decode(self, log_probs: np.ndarray, frame_seconds: float, *, alpha: float | None = None,
               beta: float | None = None, beam_width: int | None = None, hotwords=(),
               hotword_weight: float = HOTWORD_WEIGHT, time_offset: float = 0.0,
               unk_score_offset: float | None = None, blank_offset: float | None = None) -> Decoded:
        """The best transcript of (T, V) log-probs, with word times as in `greedy_decode`.

        alpha, beta, beam_width, unk_score_offset, blank_offset override `params` for this call;
        `hotwords` (words or phrases, e.g. the names in a recording; one string is one hotword) get
        `hotword_weight` added to the score of any hypothesis that contains them, and their prefixes a
        share of it, so that the search keeps them even where the LM has never seen them. Word
        confidences come from the network's own log-probs, without the offset.
        """
        if len(log_probs) == 0:
            return Decoded("", ())
        text, _, word_frames, _, _ = self._search(log_probs, alpha, beta, beam_width, hotwords, hotword_weight,
                                                  prune_history=True, unk_score_offset=unk_score_offset,
                                                  blank_offset=blank_offset)[0]
        probs = np.exp(log_probs)
        return Decoded(text, tuple(_word(w, probs, s, e, frame_seconds, time_offset) for w, (s, e) in word_frames))

    def beams(self, log_probs: np.ndarray, top_k: int = 5, *, alpha: float | None = None, beta: float | None = None,
              beam_width: int | None = None, hotwords=(), hotword_weight: float = HOTWORD_WEIGHT) -> list[Beam]:
        """The top_k hypotheses, best first, with their acoustic and LM scores (a view for teaching).

        The acoustic score is that of the log-probs the search saw: after `params.blank_offset`."""
        if len(log_probs) == 0:
            return []
        found = self._search(log_probs, alpha, beta, beam_width, hotwords, hotword_weight, prune_history=False)
        return [Beam(text, float(acoustic), float(total - acoustic), float(total))
                for text, _, _, acoustic, total in found[:top_k]]
