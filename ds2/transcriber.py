"""The one path from audio to text: `Transcriber.transcribe()` for whole recordings and
`Transcriber.stream()` for live audio. The CLI, the Gradio app, the evaluator and the benchmark all
call these, and nothing else touches the model.

    t = Transcriber()                        # bundled model + LM from assets/
    r = t.transcribe("speech.flac")          # Result: greedy and LM text, words, emissions, timings
    for path, r in t.transcribe_many(paths): ...   # many files: the network runs one file ahead
    s = t.stream(); s.feed(chunk, 48000) ... s.finish()
"""

import contextlib
import copy
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, load_audio, to_mono_16k
from .checkpoint import CheckpointError, load_model
from .decoding import HOTWORD_WEIGHT, BeamDecoder, Decoded, Word, finite, greedy_decode, hotword_list
from .features import FeatureExtractor
from .text import ALPHABET

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = ASSETS / "models" / "ds2-small"
DEFAULT_LM = ASSETS / "lm"
MAX_SECONDS = 3600.0  # longest recording accepted (1 hour), transcribed in segments
SEGMENT_SECONDS = 20.0  # long audio is cut into segments of at most this length ...
CUT_SEARCH_SECONDS = 4.0  # ... at the quietest 10 ms within this span before the limit
MIN_SEGMENT_SECONDS = 0.5
BATCH_SEGMENTS = 4  # segments run through the network together
TRIM_MARGIN_SECONDS = 0.2  # quiet kept around the speech of a streamed segment
GIL_SWITCH_SECONDS = 1e-4  # Python's thread switch interval while transcribe_many overlaps work


_switch_lock = threading.Lock()
_switch_users = 0  # blocks inside _switch_interval, in any thread
_switch_before = 0.005


@contextlib.contextmanager
def _switch_interval(seconds: float):
    """Python's thread switch interval at most `seconds` inside the block, as before once the last
    such block (of any thread: a live session's final decodes, transcribe_many) has ended."""
    global _switch_users, _switch_before
    with _switch_lock:
        if _switch_users == 0:
            _switch_before = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_before, seconds))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_before)


@dataclass(frozen=True)
class Result:
    greedy: str  # best path, repeats and blanks removed
    lm: str  # beam search rescored by the n-gram LM (plain beam search when no LM is loaded; "" if skipped)
    greedy_words: tuple[Word, ...]
    words: tuple[Word, ...]  # the LM transcript's words with times (s) and confidences
    duration: float  # seconds of audio
    emissions: np.ndarray = field(repr=False)  # (frames, symbols) log-probs, segments concatenated
    frame_seconds: float = 0.03  # seconds per emission frame
    timings: dict = field(default_factory=dict)  # seconds spent in each stage


class Transcriber:
    """A loaded model, its feature extractor and the decoders.

    `model`: a model folder (model.safetensors + config.json); None for the bundled default.
    `lm`: an LM folder (lm.json, lm.bin, unigrams.txt); "default" for the bundled one if present;
    None or "none" for beam search without an LM.
    """

    def __init__(self, model=None, lm="default", device: str = "cpu"):
        model_dir = Path(model) if model is not None else DEFAULT_MODEL
        if model is None and not (model_dir / "config.json").exists():
            raise CheckpointError(f"no bundled model in {model_dir}: train one (train/README.md) or pass a model folder")
        self.model, self.feature_config, self.meta = load_model(model_dir, device)
        self.model_dir, self.device = model_dir, torch.device(device)
        self.extractor = FeatureExtractor(self.feature_config)
        self.frame_seconds = self.model.config.time_stride / self.feature_config.frames_per_second
        if lm == "default":
            lm = DEFAULT_LM if (DEFAULT_LM / "lm.json").exists() else None
            if lm is None:
                warnings.warn(f"beam search runs without a language model: none bundled in {DEFAULT_LM}"
                              " (train/README.md builds it)", stacklevel=2)
        if lm in (None, "none"):
            self.lm_dir, self.beam = None, BeamDecoder()
        else:
            self.lm_dir = Path(lm)
            if not (self.lm_dir / "lm.json").exists():
                raise FileNotFoundError(f"{self.lm_dir}: not an LM folder (no lm.json); use --lm none to go without")
            self.beam = BeamDecoder.from_dir(self.lm_dir)
        self._partial_model, self._partial_lock = None, threading.Lock()

    def partial_model(self) -> torch.nn.Module:
        """The network for a live session's provisional text, which its final decode replaces: on a
        CPU the model with its GRUs and linear layers dynamically quantised to int8 (about twice as
        fast; `python -m ds2.bench` measures its WER change), elsewhere the model itself. Made once."""
        with self._partial_lock:
            if self._partial_model is None:
                self._partial_model = self.model
                if self.device.type == "cpu" and "fbgemm" in torch.backends.quantized.supported_engines:
                    try:
                        with warnings.catch_warnings():  # torch.ao.quantization's notice of its move to torchao
                            warnings.simplefilter("ignore", DeprecationWarning)
                            self._partial_model = torch.ao.quantization.quantize_dynamic(
                                copy.deepcopy(self.model), {torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8)
                    except (AttributeError, RuntimeError):  # a torch without it: the model itself, slower
                        pass
            return self._partial_model

    # --- whole recordings ---
    def transcribe(self, audio, sample_rate: int | None = None, *, progress=None, name: str | None = None,
                   beam: bool = True, **beam_options) -> Result:
        """Transcribe a path, bytes or array ((samples,) or (samples, channels); `sample_rate` needed).

        Raises AudioError for audio that cannot be transcribed. `progress(done, total)` is called
        as segments finish. `beam=False` skips the beam search (greedy only; `lm` is "").
        `beam_options` go to the beam search (`BeamDecoder.decode`): e.g. hotwords=["knollys"].
        """
        wave, emissions, timings = self._load_and_run(audio, sample_rate, name, progress)
        return self.decode(emissions, wave.size / SAMPLE_RATE, timings, beam=beam, **beam_options)

    def _load_and_run(self, audio, sample_rate=None, name=None, progress=None):
        """Audio -> (16 kHz wave, emissions, timings): everything before decoding."""
        tic = time.perf_counter()
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise AudioError(f"{name or 'audio'}: an array needs its sample rate")
            wave = to_mono_16k(audio, sample_rate, max_seconds=MAX_SECONDS, name=name or "audio")
        else:
            wave = load_audio(audio, max_seconds=MAX_SECONDS, name=name)
        timings = {"load": time.perf_counter() - tic}
        return wave, self.emissions(wave, progress=progress, timings=timings), timings

    def transcribe_many(self, sources, *, beam: bool = True, ahead: int = 1, names=None, **beam_options):
        """Yield (source, Result or AudioError) for each path or bytes in `sources`, in order.
        `names`, one per source, name them in errors (default: the path; "audio" for bytes);
        `beam_options` go to every beam search, as in `transcribe`.

        While one file is beam-searched (Python, holding the GIL), a worker thread already loads
        the next `ahead` files and runs the network on them (torch releases the GIL), so on two
        cores the network's time hides behind the LM's. Results equal `transcribe`'s.

        The worker needs the GIL back after every torch op, and with Python's default 5 ms switch
        interval the beam search would keep it for that long each time (measured: the network ran
        7x slower beside a busy Python thread). Until the generator ends, the interval is 0.1 ms.
        """
        sources = iter(sources)
        names = iter(names) if names is not None else None
        with ThreadPoolExecutor(1, thread_name_prefix="ds2-network") as pool, _switch_interval(GIL_SWITCH_SECONDS):
            queued = deque()
            while True:
                while len(queued) <= ahead and (source := next(sources, None)) is not None:
                    name = next(names) if names is not None else None
                    queued.append((source, pool.submit(self._load_and_run, source, name=name)))
                if not queued:
                    return
                source, future = queued.popleft()
                try:
                    wave, emissions, timings = future.result()
                except AudioError as e:
                    yield source, e
                    continue
                yield source, self.decode(emissions, wave.size / SAMPLE_RATE, timings, beam=beam, **beam_options)

    def emissions(self, wave: np.ndarray, progress=None, timings: dict | None = None, model=None) -> np.ndarray:
        """(samples,) 16 kHz waveform -> (frames, symbols) log-probs, long audio in segments;
        `model`: another network to run (partial_model()), default the loaded one."""
        timings = {} if timings is None else timings
        bounds = segment_bounds(wave)
        parts = []
        for start in range(0, len(bounds), BATCH_SEGMENTS):
            group = bounds[start:start + BATCH_SEGMENTS]
            parts += self._run_network([wave[a:b] for a, b in group], timings, model or self.model)
            if progress is not None:
                progress(start + len(group), len(bounds))
        # Segments start at multiples of the total stride, so frames line up with wall time.
        return np.concatenate(parts) if parts else np.zeros((0, len(ALPHABET)), np.float32)

    @torch.inference_mode()
    def _run_network(self, waves: list[np.ndarray], timings: dict, model: torch.nn.Module) -> list[np.ndarray]:
        tic = time.perf_counter()
        feats = [self.extractor(torch.from_numpy(w)) for w in waves]
        lengths = torch.tensor([f.shape[0] for f in feats])
        batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device)
        timings["features"] = timings.get("features", 0.0) + time.perf_counter() - tic
        tic = time.perf_counter()
        log_probs, out_lengths = model(batch, lengths)
        log_probs = log_probs.float().cpu().numpy()
        timings["model"] = timings.get("model", 0.0) + time.perf_counter() - tic
        return [lp[:n] for lp, n in zip(log_probs, out_lengths.tolist())]

    def decode(self, emissions: np.ndarray, duration: float, timings: dict | None = None, beam: bool = True,
               **beam_options) -> Result:
        """Greedy and beam (+LM) decoding of cached emissions; `beam_options` (alpha, beta,
        beam_width, hotwords, hotword_weight, ...: `BeamDecoder.decode`'s) apply to this call only,
        without re-running the network."""
        timings = dict(timings or {})
        tic = time.perf_counter()
        greedy = greedy_decode(emissions, self.frame_seconds)
        timings["greedy"] = time.perf_counter() - tic
        tic = time.perf_counter()
        best = self.beam.decode(emissions, self.frame_seconds, **beam_options) if beam and len(emissions) else Decoded("", ())
        timings["lm"] = time.perf_counter() - tic
        return Result(greedy.text, best.text, greedy.words, best.words, duration, emissions, self.frame_seconds, timings)

    def stream(self, **options) -> "StreamingSession":
        """A new live session; see StreamingSession for the options."""
        return StreamingSession(self, **options)


def segment_bounds(wave: np.ndarray, max_seconds: float = SEGMENT_SECONDS) -> list[tuple[int, int]]:
    """Cut a waveform into (start, end) sample spans of at most `max_seconds`, each cut at the
    quietest 10 ms frame in the last CUT_SEARCH_SECONDS before the limit (the last three quarters
    of it, for a limit under 5 1/3 s)."""
    if max_seconds < MIN_SEGMENT_SECONDS:
        raise ValueError(f"segments of at most {max_seconds} s: the limit must be at least {MIN_SEGMENT_SECONDS} s")
    hop = SAMPLE_RATE // 100
    limit = int(max_seconds * SAMPLE_RATE)
    search = min(int(CUT_SEARCH_SECONDS * SAMPLE_RATE), limit * 3 // 4)  # every cut moves on by a quarter at least
    bounds, start = [], 0
    while wave.size - start > limit:
        window = wave[start + limit - search:start + limit]
        energy = np.square(window[:window.size // hop * hop].reshape(-1, hop)).sum(1)
        cut = start + limit - search + int(np.argmin(energy)) * hop
        cut -= (cut - start) % (hop * 3)  # keep segment starts on frame-stride boundaries
        bounds.append((start, cut))
        start = cut
    bounds.append((start, wave.size))
    return bounds


def frame_levels(wave: np.ndarray) -> np.ndarray:
    """RMS level of each whole 10 ms frame: (samples,) -> (frames,)."""
    hop = SAMPLE_RATE // 100
    frames = wave[:wave.size // hop * hop].reshape(-1, hop)
    return np.sqrt(np.mean(np.square(frames), axis=1)) + 1e-7


@dataclass
class StreamState:
    """What a live session shows: finished segments plus the open one, greedy and LM."""
    final_greedy: list = field(default_factory=list)
    final_lm: list = field(default_factory=list)
    open_greedy: str = ""
    open_lm: str = ""
    segments: list = field(default_factory=list)  # (start, end) seconds of each final segment's speech
    seconds: float = 0.0  # audio received so far
    pending: int = 0  # the last `pending` final segments still show provisional text (final decode running)

    @property
    def greedy(self) -> str:
        return " ".join(t for t in [*self.final_greedy, self.open_greedy] if t)

    @property
    def lm(self) -> str:
        return " ".join(t for t in [*self.final_lm, self.open_lm] if t)


class StreamingSession:
    """Live transcription of audio arriving in chunks, with bounded work per update.

    A bidirectional model cannot emit before it has heard what follows, so the session keeps one
    open segment, re-decodes it on every `feed`, and closes it at a pause (a run of quiet 10 ms
    frames at least `pause_seconds` long) or when it reaches `max_segment_seconds`. Closed
    segments are never decoded again, so an update costs the same at minute 5 as at second 5.

    Two passes, so that no update waits for the slow one: the open segment's text is provisional,
    from `Transcriber.partial_model()` (int8 on a CPU) and a narrow beam (`partial_beam_width`).
    A closed segment first shows the same provisional text; its final decode (the full model and
    the full beam, exactly what `Transcriber.transcribe` gives for its samples) runs on a worker
    thread (`background=True`) and replaces it at the first `feed` after it is done; `finish()`
    waits for all of them. With `background=False` the closing update decodes it itself.
    `hotwords` (and `hotword_weight`) are favoured by every beam search of the session.
    """

    def __init__(self, transcriber: Transcriber, pause_seconds: float = 0.4, max_segment_seconds: float = 6.0,
                 min_update_seconds: float = 0.25, partial_beam_width: int = 16, background: bool = True,
                 fast_partials: bool = True, hotwords=(), hotword_weight: float = HOTWORD_WEIGHT):
        if not max_segment_seconds >= MIN_SEGMENT_SECONDS + 0.5:  # a forced cut lands half a second before it
            raise ValueError(f"max_segment_seconds={max_segment_seconds}: at least {MIN_SEGMENT_SECONDS + 0.5} s")
        self.t = transcriber
        self.beam_options = dict(hotwords=hotword_list(hotwords),
                                 hotword_weight=finite("hotword_weight", hotword_weight))
        self.pause_seconds, self.max_segment_seconds = pause_seconds, max_segment_seconds
        self.partial_beam_width = partial_beam_width
        self.partial_network = transcriber.partial_model() if fast_partials else transcriber.model
        self.min_update_seconds = min_update_seconds
        self.background = background
        self.state = StreamState()
        self.buffer = np.zeros(0, np.float32)  # the open segment, 16 kHz
        self.buffer_start = 0  # its first sample's index in the whole stream
        self.pending = 0  # samples received since the last decode
        self.quiet_frames = 0
        self.heard_speech = False
        self.noise_floor = None
        self._last_partial = None  # (span, Result) of the last provisional decode of the open segment
        self._finals = deque()  # futures of the final decodes still shown as provisional, oldest first
        self._worker = None  # one thread, made at the first close: finals finish in order

    def feed(self, chunk, sample_rate: int) -> StreamState:
        """Add a chunk ((samples,) or (samples, channels), int or float, any rate); returns the state."""
        if np.asarray(chunk).size == 0:
            return self._collect()
        wave = to_mono_16k(chunk, sample_rate, name="microphone chunk", whole=False)
        self.state.seconds += wave.size / SAMPLE_RATE
        self._track_pauses(wave)
        self.buffer = np.concatenate([self.buffer, wave])
        self.pending += wave.size
        closed = False
        while (cut := self._cut_point()) is not None:  # more than once only for chunks longer than a segment
            self._close(cut)
            closed = True
        if not closed and self.pending >= self.min_update_seconds * SAMPLE_RATE:
            self._decode_open()
        return self._collect()

    def finish(self) -> StreamState:
        """Close the open segment, wait for every final decode and return the final state."""
        if self.buffer.size:
            self._close(self.buffer.size)
        state = self._collect(wait=True)
        if self._worker is not None:  # its thread ends now; audio fed after this starts another
            self._worker.shutdown()
            self._worker = None
        return state

    def _is_speech(self, levels: np.ndarray) -> np.ndarray:
        return levels > max((self.noise_floor or 0.0) * 4, 3e-3)

    def _track_pauses(self, wave: np.ndarray) -> None:
        """Follow the noise floor (it falls at once and rises slowly) and count quiet frames."""
        for level in frame_levels(wave):
            if self.noise_floor is None or level < self.noise_floor:
                self.noise_floor = max(float(level), 1e-5)
            else:
                self.noise_floor *= 1.002
            if self._is_speech(level):
                self.heard_speech, self.quiet_frames = True, 0
            else:
                self.quiet_frames += 1

    def _cut_point(self) -> int | None:
        hop = SAMPLE_RATE // 100
        if self.heard_speech and self.quiet_frames * hop >= self.pause_seconds * SAMPLE_RATE:
            return max(0, self.buffer.size - self.quiet_frames * hop // 2)  # the middle of the pause
        if self.buffer.size >= self.max_segment_seconds * SAMPLE_RATE:
            return segment_bounds(self.buffer, self.max_segment_seconds - 0.5)[0][1]
        return None

    def _speech_span(self, wave: np.ndarray) -> tuple[int, int] | None:
        """Sample span of the speech in `wave` with TRIM_MARGIN_SECONDS of quiet on either side."""
        hop, margin = SAMPLE_RATE // 100, int(TRIM_MARGIN_SECONDS * SAMPLE_RATE)
        speech = np.flatnonzero(self._is_speech(frame_levels(wave)))
        if speech.size == 0:
            return None
        start, end = max(0, speech[0] * hop - margin), min(wave.size, (speech[-1] + 1) * hop + margin)
        return (start, end) if end - start >= 0.1 * SAMPLE_RATE else None

    def _partial(self, span: tuple[int, int] | None) -> Result | None:
        """Provisional decode of the open segment's `span` (the last one again if it has not changed)."""
        if span is None:
            return None
        if self._last_partial is None or self._last_partial[0] != span:
            wave = self.buffer[span[0]:span[1]]
            emissions = self.t.emissions(wave, model=self.partial_network)
            self._last_partial = span, self.t.decode(emissions, wave.size / SAMPLE_RATE,
                                                     beam_width=self.partial_beam_width, **self.beam_options)
        return self._last_partial[1]

    def _final(self, wave: np.ndarray) -> Result:
        with _switch_interval(GIL_SWITCH_SECONDS):  # or the caller's next partial waits on this thread's beam
            return self.t.decode(self.t.emissions(wave), wave.size / SAMPLE_RATE, **self.beam_options)

    def _decode_open(self) -> None:
        self.pending = 0
        result = self._partial(self._speech_span(self.buffer))
        self.state.open_greedy, self.state.open_lm = (result.greedy, result.lm) if result else ("", "")

    def _close(self, cut: int) -> None:
        span = self._speech_span(self.buffer[:cut]) if self.heard_speech else None
        if span is not None:
            wave = self.buffer[span[0]:span[1]].copy()
            if self.background:
                self._worker = self._worker or ThreadPoolExecutor(1, thread_name_prefix="ds2-final")
                self._finals.append(self._worker.submit(self._final, wave))
                result = self._partial(span)
            else:
                result = self._final(wave)
            self.state.final_greedy.append(result.greedy)
            self.state.final_lm.append(result.lm)
            self.state.segments.append(tuple((self.buffer_start + i) / SAMPLE_RATE for i in span))
            self.state.pending = len(self._finals)
            if not self.background:
                self._drop_if_empty(len(self.state.segments) - 1)
        self.buffer, self.buffer_start = self.buffer[cut:], self.buffer_start + cut
        self._last_partial = None  # its span was in the buffer before the cut
        self.state.open_greedy = self.state.open_lm = ""
        # What follows the cut is decoded by the next update, not now: one decode per update.
        self.heard_speech, self.quiet_frames, self.pending = False, 0, self.buffer.size

    def _collect(self, wait: bool = False) -> StreamState:
        """Put the final decodes that are done (all of them, waiting, if `wait`) in place of their
        provisional text, oldest first."""
        while self._finals and (wait or self._finals[0].done()):
            result = self._finals.popleft().result()
            i = len(self.state.segments) - 1 - len(self._finals)
            self.state.final_greedy[i], self.state.final_lm[i] = result.greedy, result.lm
            self.state.pending = len(self._finals)
            self._drop_if_empty(i)
        return self.state

    def _drop_if_empty(self, i: int) -> None:
        """A final segment in which nothing was recognised is not shown."""
        if not (self.state.final_greedy[i] or self.state.final_lm[i]):
            for kept in (self.state.final_greedy, self.state.final_lm, self.state.segments):
                del kept[i]
