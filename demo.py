"""The Deep Speech 2 demo: a Gradio app (live microphone, files, a view that teaches CTC) and a
terminal microphone mode. All recognition goes through ds2.Transcriber; the network runs nowhere else.

    python demo.py                           # http://127.0.0.1:7860, bundled model and LM
    python demo.py --model DIR --lm none     # any model folder, beam search without an LM
    python demo.py --cli                     # live transcription of the default input device

The handlers below take paths and arrays and return plain values, so tests call them directly;
`build_app` only wires them to components.
"""

import argparse
import atexit
import difflib
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ds2.audio import SAMPLE_RATE, AudioError, load_audio, to_mono_16k
from ds2.checkpoint import CheckpointError
from ds2.data import read_manifest
from ds2.decoding import LMError, Word, greedy_path, hotword_list
from ds2 import transcripts
from ds2.text import ALPHABET, BLANK_ID, SPACE_ID, wer_cer
from ds2.transcriber import Result, StreamingSession, Transcriber

ROOT = Path(__file__).resolve().parent
SAMPLES = ROOT / "assets" / "samples"  # samples.jsonl: {"audio", "text", "duration", "source"} per line
MAX_SECONDS = 600.0  # longest audio the app accepts (10 min), transcribed in segments
MAX_FILE_SIZE = "128mb"  # 10 min of 48 kHz stereo 16-bit WAV is 110 MB
LESSON_SECONDS = 30.0  # the teaching view shows at most a file's first 30 s; a recording keeps its last 30 s
STREAM_EVERY_SECONDS = 0.5  # the browser sends a microphone chunk this often; each one updates the text
CONCURRENCY = 2  # file transcriptions at once (two CPU cores); the rest wait in the queue ...
QUEUE_SIZE = 64  # ... of at most this many requests; more are told that the queue is full
LIVE_SESSIONS = 4  # microphones streaming at once: a stream holds its slot while recording
EXPORT_KEEP_SECONDS = 3600.0  # downloads (.txt/.srt/.vtt/.json) are kept this long, then removed
CLIPPED_SHARE = 1e-3  # more than this share of samples at full scale: warn of clipping
TOP_BEAMS = 5
BLANK_SHOWN, SPACE_SHOWN = "_", "␣"  # how the blank and the space look in the frame-by-frame path
CSS = ".mono textarea { font-family: ui-monospace, monospace; }"


# --- files ---
def transcribe_file(transcriber: Transcriber, path, progress=None, hotwords=()):
    """A path -> ((samples,) 16 kHz waveform, Result); AudioError says why audio is unusable."""
    if not path:
        raise AudioError("no audio yet: upload a file or record one first")
    wave = load_audio(path, max_seconds=MAX_SECONDS, name=Path(path).name)
    return wave, transcriber.transcribe(wave, SAMPLE_RATE, progress=progress, hotwords=hotwords)


def read_hotwords(text: str | None) -> tuple[list[str], str]:
    """The hotwords box (words or phrases, comma- or line-separated) -> (usable ones, a note naming
    those that cannot be searched for: nothing of them is left after normalising to a-z and ')."""
    given = [w.strip() for w in (text or "").replace("\n", ",").split(",") if w.strip()]
    usable = [w for w in given if hotword_list(w)]
    ignored = [w for w in given if w not in usable]
    note = f"⚠️ Not used as hotwords (no letters a-z in them): {', '.join(map(repr, ignored))}." if ignored else ""
    return usable, note


def describe(wave: np.ndarray, result, reference: str = "", note: str = "") -> str:
    """A Markdown line about the result: WER against a reference, clipping, nothing heard."""
    notes = [f"{result.duration:.1f} s of audio, transcribed in {sum(result.timings.values()):.2f} s."]
    if reference.strip():
        (gw, gc), (lw, lc) = wer_cer([(reference, result.greedy)]), wer_cer([(reference, result.lm)])
        notes.append(f"Against the reference: greedy WER {gw:.0%} (CER {gc:.0%}), LM WER {lw:.0%} (CER {lc:.0%}).")
    clipped = float(np.mean(np.abs(wave) >= 0.99))
    if clipped > CLIPPED_SHARE:
        notes.append(f"⚠️ The audio is clipped ({clipped:.1%} of samples at full scale), which hurts recognition: "
                     "record with a lower input level.")
    if not (result.greedy or result.lm):
        notes.append("No speech was recognised.")
    return " ".join(notes + [note] if note else notes)


def word_rows(words) -> list[list]:
    return [[w.word, round(w.start, 2), round(w.end, 2), round(w.confidence, 2)] for w in words]


def export(result, name: str, folder: Path, keep_seconds: float = EXPORT_KEEP_SECONDS) -> list[str]:
    """Write the transcript as name.txt (LM text), name.srt and name.vtt (subtitles of the LM words)
    and name.json (both transcripts) into a new subfolder of `folder`; subfolders older than
    `keep_seconds` are removed first."""
    for old in folder.glob("*/"):
        if time.time() - old.stat().st_mtime > keep_seconds:
            shutil.rmtree(old, ignore_errors=True)
    return [str(path) for path in transcripts.write(result, folder / uuid.uuid4().hex, name)]


def read_samples(folder) -> list[dict]:
    """The example clips listed in folder/samples.jsonl; none if there is no such file."""
    manifest = Path(folder) / "samples.jsonl"
    return read_manifest(manifest) if manifest.is_file() else []


# --- the microphone ---
@dataclass
class Recording:
    """One microphone recording: its live session and its last LESSON_SECONDS of 16 kHz audio,
    which hold the last segment (the session cuts segments long before that)."""
    session: StreamingSession
    tail: list = field(default_factory=list)
    received: int = 0  # samples since the start
    # Gradio 6 runs one stream as one queue job: its chunks arrive one at a time, in order (the browser
    # holds back the audio recorded while a chunk is processed and sends it with the next one). The
    # stop and the teaching view are other events, in other worker threads: the lock orders them.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def keep(self, wave: np.ndarray) -> None:
        self.tail.append(wave)
        self.received += wave.size
        while sum(map(len, self.tail)) - len(self.tail[0]) >= LESSON_SECONDS * SAMPLE_RATE:
            self.tail.pop(0)

    def last_utterance(self) -> np.ndarray | None:
        """The speech of the last finished segment, (samples,) 16 kHz."""
        if not self.session.state.segments or not self.tail:
            return None
        tail = np.concatenate(self.tail)
        start, end = (round(s * SAMPLE_RATE) - (self.received - tail.size) for s in self.session.state.segments[-1])
        speech = tail[max(start, 0):max(end, 0)]
        return speech if speech.size else None


def start_microphone(transcriber: Transcriber, hotwords: str = "") -> tuple:
    """A new recording starts clean, favouring the hotwords box's words -> (recording, greedy, LM, message)."""
    usable, note = read_hotwords(hotwords)
    return Recording(transcriber.stream(hotwords=usable)), "", "", note


def feed_microphone(transcriber: Transcriber, recording: Recording | None, chunk):
    """One streamed chunk ((rate, (samples,) or (samples, channels) int16) from Gradio) ->
    (recording, greedy text, LM text). Only the open segment is decoded again."""
    recording = recording or Recording(transcriber.stream())
    try:
        has_audio = chunk is not None and np.size(chunk[1]) > 0
        wave = to_mono_16k(chunk[1], chunk[0], name="microphone chunk", whole=False) if has_audio else None
    except AudioError:  # an empty or broken chunk: skip it; the next one comes half a second later
        wave = None
    with recording.lock:
        if wave is not None:  # converted here to keep it; feed() re-checks a 16 kHz wave in about 10 µs
            recording.session.feed(wave, SAMPLE_RATE)
            recording.keep(wave)
        return recording, recording.session.state.greedy, recording.session.state.lm


def finish_microphone(recording: Recording | None):
    """Close the open segment -> (greedy text, LM text, message)."""
    if recording is None:
        state = None
    else:
        with recording.lock:
            state = recording.session.finish()
    if state is None or not (state.greedy or state.lm):
        return "", "", "Nothing was recognised: check that the microphone is on and speak a little louder."
    return state.greedy, state.lm, f"{state.seconds:.1f} s recorded."


# --- the teaching view ---
@dataclass(frozen=True)
class Lesson:
    """The last utterance, kept so that re-decoding never runs the network again."""
    wave: np.ndarray  # (samples,) 16 kHz
    result: Result  # with its emissions
    hotwords: tuple = ()  # those its LM text was decoded with, so that re-decoding uses them too


def make_lesson(transcriber: Transcriber, wave: np.ndarray, result, hotwords=()) -> Lesson:
    """The first LESSON_SECONDS of a transcribed file, cut from its emissions."""
    hotwords = tuple(hotwords)
    if result.duration <= LESSON_SECONDS:
        return Lesson(wave, result, hotwords)
    frames = int(LESSON_SECONDS / result.frame_seconds)
    cut = transcriber.decode(result.emissions[:frames], LESSON_SECONDS, hotwords=hotwords)
    return Lesson(wave[:int(LESSON_SECONDS * SAMPLE_RATE)], cut, hotwords)


def recording_lesson(transcriber: Transcriber, recording: Recording | None) -> Lesson | None:
    """The last utterance of a finished recording, run through the network once more."""
    if recording is None:
        return None
    with recording.lock:
        wave = recording.last_utterance()
    hotwords = tuple(recording.session.beam_options["hotwords"])
    try:
        return None if wave is None else Lesson(wave, transcriber.transcribe(wave, SAMPLE_RATE, hotwords=hotwords),
                                                hotwords)
    except AudioError:  # a last utterance too short to transcribe on its own: nothing to explain
        return None


def collapse_steps(emissions: np.ndarray, frame_seconds: float) -> str:
    """The best path frame by frame, then with repeats merged, then without blanks."""
    shown = [BLANK_SHOWN if i == BLANK_ID else SPACE_SHOWN if i == SPACE_ID else ALPHABET[i]
             for i in greedy_path(emissions)]
    merged = [s for k, s in enumerate(shown) if k == 0 or s != shown[k - 1]]
    text = " ".join("".join(s for s in merged if s != BLANK_SHOWN).replace(SPACE_SHOWN, " ").split())
    return (f"1. the most likely symbol in each {frame_seconds * 1000:.0f} ms frame ({BLANK_SHOWN} is the blank):\n"
            f"{''.join(shown)}\n\n2. repeats merged:\n{''.join(merged)}\n\n3. blanks removed:\n{text}")


def lm_changes(greedy: str, lm: str) -> list[tuple[str, str | None]]:
    """The LM text as (words, label) spans; label says where it differs from the greedy text."""
    a, b = greedy.split(), lm.split()
    spans = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            spans.append((" ".join(b[j1:j2]) + " ", None))
        elif op == "delete":
            spans.append((" ".join(a[i1:i2]) + " ", "dropped by the LM"))
        else:
            spans.append((" ".join(b[j1:j2]) + " ", "changed by the LM" if op == "replace" else "added by the LM"))
    return spans


def lesson_figure(lesson: Lesson, words: tuple[Word, ...]):
    """Waveform with the words, spectrogram, and CTC posteriogram with the greedy path; one time axis."""
    from matplotlib.figure import Figure
    wave, emissions, step = lesson.wave, lesson.result.emissions, lesson.result.frame_seconds
    seconds = wave.size / SAMPLE_RATE
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    ax_wave, ax_spec, ax_post = fig.subplots(3, 1, sharex=True, height_ratios=[1, 1, 2])
    bins = min(wave.size, 3000)  # draw an envelope of at most 3000 columns, not every sample
    cols = wave[:wave.size // bins * bins].reshape(bins, -1)
    times = np.arange(bins) * cols.shape[1] / SAMPLE_RATE
    ax_wave.fill_between(times, cols.min(1), cols.max(1), color="tab:blue", lw=0)
    peak = max(float(np.abs(wave).max()), 1e-3)
    for w in words:
        ax_wave.axvspan(w.start, w.end, color=(1 - w.confidence, w.confidence, 0.2), alpha=0.25, lw=0)
        ax_wave.text((w.start + w.end) / 2, peak * 0.95, f"{w.word}\n{w.confidence:.2f}", ha="center", va="top",
                     fontsize=8)
    ax_wave.set(ylim=(-peak, peak), ylabel="waveform", title="words (beam search + LM) with their confidence")
    with np.errstate(divide="ignore"):  # digital silence has no level in dB
        ax_spec.specgram(wave, NFFT=320, Fs=SAMPLE_RATE, noverlap=160, cmap="magma")  # 20 ms window, 10 ms hop
    ax_spec.set(ylabel="frequency (Hz)", title="spectrogram")
    ax_post.imshow(np.exp(emissions).T, aspect="auto", origin="lower", cmap="Blues", vmin=0, vmax=1,
                   extent=(0, len(emissions) * step, -0.5, len(ALPHABET) - 0.5), interpolation="nearest")
    ax_post.plot((np.arange(len(emissions)) + 0.5) * step, greedy_path(emissions), "o", color="tab:orange", ms=2.5)
    ax_post.set_yticks(range(len(ALPHABET)), [BLANK_SHOWN, SPACE_SHOWN, *ALPHABET[2:]], fontsize=7)
    ax_post.set(xlim=(0, seconds), xlabel="time (s)", ylabel="symbol",
                title="CTC posteriogram: P(symbol | frame), the greedy path in orange")
    return fig


def teach(transcriber: Transcriber, lesson: Lesson | None, alpha: float, beta: float, beam_width: int):
    """Decode the cached emissions with these LM settings -> (figure, frame-by-frame steps,
    top beams as rows, LM changes as highlighted spans); no network run."""
    if lesson is None:
        return None, "Transcribe something first: this view explains the last utterance.", [], []
    options = dict(alpha=alpha, beta=beta, beam_width=int(beam_width), hotwords=lesson.hotwords)
    r = transcriber.decode(lesson.result.emissions, lesson.result.duration, **options)
    beams = transcriber.beam.beams(r.emissions, TOP_BEAMS, **options)
    rows = [[b.text, round(b.acoustic_score, 2), round(b.lm_score, 2), round(b.total_score, 2)] for b in beams]
    steps = collapse_steps(r.emissions, r.frame_seconds)
    return lesson_figure(lesson, r.words), steps, rows, lm_changes(r.greedy, r.lm)


def model_card(transcriber: Transcriber) -> str:
    """Markdown: architecture, parameters, training data and measured WER, then the folder's README."""
    c, f, meta = transcriber.model.config, transcriber.feature_config, transcriber.meta
    rnn = f"{c.rnn_layers} {'bi' if c.bidirectional else 'uni'}directional {c.rnn_type.upper()} layers of " \
          f"{c.rnn_hidden} units" + ("" if c.bidirectional else f" + a lookahead of {c.lookahead} frames")
    lines = [f"### Model `{transcriber.model_dir.name}`",
             f"- **Architecture**: {c.conv_layers} 2-D convolution layer(s) ({c.conv_channels} channels, time stride "
             f"{c.time_stride}), {rnn}, a fully connected layer to {c.n_classes} symbols: "
             f"**{transcriber.model.num_parameters / 1e6:.2f} M parameters**",
             f"- **Features**: {f.kind} ({f.n_feats} per frame), {f.window_ms} ms window, {f.hop_ms} ms hop",
             f"- **Training data**: {', '.join(Path(p).name for p in meta.get('train', [])) or 'not recorded'}"
             + (f" (weights averaged over {len(meta['averaged'])} checkpoints)" if meta.get("averaged")
                else f" ({meta.get('step', '?')} steps)"),
             "- **Measured**: " + (f"dev WER {meta['dev_wer']:.1%}, CER {meta['dev_cer']:.1%} (greedy)"
                                   if "dev_wer" in meta else "no dev-set WER recorded"),
             "- **Language model**: " + (str(transcriber.lm_dir) if transcriber.lm_dir else
                                         "none: beam search on acoustic scores only (alpha and beta have no effect)")]
    readme = transcriber.model_dir / "README.md"
    return "\n".join(lines) + ("\n\n---\n\n" + readme.read_text(encoding="utf-8") if readme.is_file() else "")


# --- the handlers, one per event; each returns its outputs in the order the app wires them ---
def file_view(transcriber: Transcriber, exports: Path, path, reference: str, alpha: float, beta: float,
              beam_width: int, hotwords: str = "", progress=None) -> tuple:
    """Transcribe a file, favouring the hotwords box's words -> (greedy, LM, message, greedy word rows,
    LM word rows, download paths, lesson, *teaching view); unusable audio gives a message and empty
    outputs."""
    usable, note = read_hotwords(hotwords)
    try:
        wave, r = transcribe_file(transcriber, path, progress, usable)
    except AudioError as e:  # the message names the file, not the server's temp folder
        message = f"⚠️ {str(e).replace(str(path), Path(path).name) if path else e}"
        return "", "", message, [], [], None, None, *teach(transcriber, None, alpha, beta, beam_width)
    lesson = make_lesson(transcriber, wave, r, usable)
    files = export(r, Path(path).stem, exports)
    return (r.greedy, r.lm, describe(wave, r, reference, note), word_rows(r.greedy_words), word_rows(r.words), files,
            lesson, *teach(transcriber, lesson, alpha, beta, beam_width))


def recording_view(transcriber: Transcriber, recording: Recording | None, alpha: float, beta: float,
                   beam_width: int) -> tuple:
    """After the microphone stops -> (lesson, *teaching view) for the end of the recording."""
    lesson = recording_lesson(transcriber, recording)
    return lesson, *teach(transcriber, lesson, alpha, beta, beam_width)


# --- the app ---
def build_app(transcriber: Transcriber, samples_dir=SAMPLES, hotwords=()):
    """The Blocks app, queued, its hotwords box holding `hotwords`; launch it with launch(app)."""
    import gradio as gr
    samples, exports = read_samples(samples_dir), Path(tempfile.mkdtemp(prefix="ds2-demo-"))
    atexit.register(shutil.rmtree, exports, ignore_errors=True)
    p = transcriber.beam.params

    def on_file(path, reference, alpha, beta, width, hotwords, progress=gr.Progress()):
        report = lambda done, total: progress(done / total, desc=f"segment {done} of {total}")
        return file_view(transcriber, exports, path, reference, alpha, beta, width, hotwords, report)

    with gr.Blocks(title="Deep Speech 2", delete_cache=(600, 3600)) as app:
        recording, lesson = gr.State(None), gr.State(None)
        gr.Markdown(f"# Deep Speech 2\nEnd-to-end speech recognition with CTC: the greedy best path and a beam search"
                    f" with {'an n-gram LM' if transcriber.lm_dir else 'no LM (none loaded)'}, side by side.")
        with gr.Tab("Transcribe"):
            with gr.Row():
                with gr.Column(scale=2):
                    with gr.Tab("Live microphone"):
                        mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", elem_id="mic-input",
                                       label="Press record and speak; text updates as you talk")
                    with gr.Tab("File"):
                        audio_file = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="file-input",
                                              label=f"WAV, FLAC, Ogg/Opus or MP3, up to {MAX_SECONDS / 60:.0f} min")
                        reference = gr.Textbox(label="Reference text (optional): shows the WER of each output")
                        button = gr.Button("Transcribe", variant="primary", elem_id="transcribe-button")
                        examples = gr.Examples(
                            [[s["audio"], s["text"]] for s in samples], [audio_file, reference],
                            example_labels=[s["text"] for s in samples], label="Examples, with their reference text",
                        ) if samples else None
                    hotwords = gr.Textbox(label="Hotwords (optional): names or terms to favour in the LM text, "
                                          "comma-separated; used from the next recording or transcription",
                                          value=", ".join(hotwords), placeholder="e.g. Knollys, Manderson",
                                          elem_id="hotwords-input")
                with gr.Column(scale=3):
                    message = gr.Markdown(elem_id="message")
                    with gr.Row():
                        greedy = gr.Textbox(label="Greedy (best path)", lines=4, elem_id="greedy-output")
                        lm = gr.Textbox(label="Beam search + LM" if transcriber.lm_dir else "Beam search (no LM loaded)",
                                        lines=4, elem_id="lm-output")
                    with gr.Accordion("Word timings and downloads", open=False):
                        with gr.Row():
                            headers = ["word", "start (s)", "end (s)", "confidence"]
                            greedy_words = gr.Dataframe(headers=headers, label="greedy words", interactive=False)
                            lm_words = gr.Dataframe(headers=headers, label="LM words", interactive=False)
                        downloads = gr.File(label="Transcript as .txt, .srt, .vtt and .json", file_count="multiple",
                                            elem_id="downloads")
        with gr.Tab("How it works"):
            gr.Markdown("The network turns every frame of audio into probabilities over 29 symbols (a CTC blank, "
                        "space, apostrophe, a-z). Greedy decoding takes the best symbol per frame, merges repeats and "
                        "drops blanks; beam search keeps the best prefixes and adds alpha × log P_LM + beta × words"
                        + (f", after adding {p.blank_offset:+g} to the blank's log-probability in every frame (tuned "
                           "on dev with alpha and beta: a lower blank keeps letters the network hedges with it)"
                           if p.blank_offset else "")
                        + ". The sliders re-decode the cached probabilities: the network does not run again.")
            figure = gr.Plot(label="waveform, spectrogram and posteriogram")
            steps = gr.Textbox(label="From frames to text: greedy decoding", lines=9, elem_classes=["mono"])
            with gr.Row():
                alpha = gr.Slider(0, 3, p.alpha, step=0.05, label="alpha (LM weight)")
                beta = gr.Slider(-2, 5, p.beta, step=0.1, label="beta (word bonus)")
                width = gr.Slider(1, max(512, p.beam_width), p.beam_width, step=1, label="beam width")
            changes = gr.HighlightedText(label="LM text, where it differs from greedy", show_legend=True,
                                         color_map={"changed by the LM": "orange", "added by the LM": "green",
                                                    "dropped by the LM": "red"})
            beams = gr.Dataframe(headers=["text", "acoustic", "LM", "total"], interactive=False,
                                 label=f"top {TOP_BEAMS} beams (log scores)")
        with gr.Tab("Model card"):
            gr.Markdown(model_card(transcriber))

        teaching = [figure, steps, beams, changes]
        file_outputs = [greedy, lm, message, greedy_words, lm_words, downloads, lesson, *teaching]
        file_inputs = [audio_file, reference, alpha, beta, width, hotwords]  # new inputs go last: API clients
        button.click(on_file, file_inputs, file_outputs, api_name="transcribe")  # the file endpoint for clients
        for event in (audio_file.upload, audio_file.stop_recording):
            event(lambda: "", None, reference).then(on_file, file_inputs, file_outputs)
        if examples:
            examples.load_input_event.then(on_file, file_inputs, file_outputs)
        mic.start_recording(lambda words: start_microphone(transcriber, words), hotwords,
                            [recording, greedy, lm, message])
        mic.stream(lambda chunk, rec: feed_microphone(transcriber, rec, chunk), [mic, recording],
                   [recording, greedy, lm], stream_every=STREAM_EVERY_SECONDS, concurrency_limit=LIVE_SESSIONS,
                   show_progress="hidden")
        mic.stop_recording(finish_microphone, recording, [greedy, lm, message]).then(
            lambda *args: recording_view(transcriber, *args), [recording, alpha, beta, width], [lesson, *teaching])
        for slider in (alpha, beta, width):
            slider.change(lambda *args: teach(transcriber, *args), [lesson, alpha, beta, width], teaching,
                          show_progress="hidden")
    return app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)


def notice_app(problem: str):
    """The app to show when no model could be loaded: what is missing and how to fix it."""
    import gradio as gr
    with gr.Blocks(title="Deep Speech 2") as app:
        gr.Markdown(f"# Deep Speech 2\n## ⚠️ No model loaded\n{problem}\n\nStart the app with a model folder: "
                    "`python demo.py --model DIR` (a folder with model.safetensors and config.json).",
                    elem_id="message")
    return app


def launch(app, host: str = "127.0.0.1", port: int = 7860, share: bool = False, samples_dir=SAMPLES):
    app.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
               allowed_paths=[str(samples_dir)], css=CSS)


# --- the terminal microphone ---
def open_microphone(on_chunk):
    """An input stream of the default microphone calling on_chunk((frames, 1) float32) every 0.25 s
    and on_chunk(None) when it stops, and its rate; exits with one sentence on what to install or plug
    in when there is no microphone to open."""
    try:
        import sounddevice as sd
    except ImportError:
        sys.exit("The terminal microphone needs the sounddevice package: pip install -r requirements.txt")
    except OSError:  # sounddevice is there but the PortAudio library is not
        sys.exit("The terminal microphone needs PortAudio: install it (Debian/Ubuntu: sudo apt-get install "
                 "libportaudio2; macOS: brew install portaudio) and try again.")
    try:
        rate = int(sd.query_devices(kind="input")["default_samplerate"])
        stream = sd.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=rate // 4,
                                callback=lambda data, frames, when, status: on_chunk(data.copy()),
                                finished_callback=lambda: on_chunk(None))
    except (sd.PortAudioError, ValueError):
        sys.exit("No microphone found: plug one in (or enable the input device in your sound settings) and try again.")
    return stream, rate


def run_cli(transcriber: Transcriber, hotwords=()) -> int:
    """Print a partial line (greedy | LM) while you speak and a greedy + LM pair for each segment."""
    import queue
    import shutil
    chunks, session, printed = queue.Queue(), transcriber.stream(hotwords=hotwords), 0
    stream, rate = open_microphone(chunks.put)

    def show(state):
        nonlocal printed
        print("\r\033[K", end="")  # the partial line gives way to what comes next
        final = len(state.final_greedy) - state.pending  # the rest are provisional until their final decode
        for g, l in zip(state.final_greedy[printed:final], state.final_lm[printed:final]):
            print(f"greedy: {g}\nlm:     {l}")
        printed = final
        greedy = " ".join(t for t in [*state.final_greedy[final:], state.open_greedy] if t)
        lm = " ".join(t for t in [*state.final_lm[final:], state.open_lm] if t)
        if greedy or lm:
            print(f"… {greedy} | {lm}"[:shutil.get_terminal_size().columns - 1], end="")
        sys.stdout.flush()

    print(f"Listening at {rate} Hz; Ctrl+C to stop.", flush=True)
    with stream:
        try:
            while (chunk := chunks.get()) is not None:
                show(session.feed(chunk, rate))
        except KeyboardInterrupt:
            pass
    show(session.finish())
    return 0


def stop_on_sigterm() -> None:
    """Make SIGTERM (`kill`, `docker stop`, systemd) stop the app as Ctrl+C does, so that the exit
    handlers run and the app's folder of transcript downloads is removed, not left in the temp folder."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Deep Speech 2 demo: Gradio app or terminal microphone")
    parser.add_argument("--model", help="model folder (default: the bundled model in assets/models)")
    parser.add_argument("--lm", default="default", help="LM folder, or 'none' (default: the bundled LM if present)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--samples", default=str(SAMPLES), help="folder with samples.jsonl and the example clips")
    parser.add_argument("--cli", action="store_true", help="transcribe the default microphone in the terminal")
    parser.add_argument("--hotword", action="append", default=[], metavar="WORD",
                        help="a word or phrase for the LM text to favour, e.g. a name (repeat for more; in the app, "
                        "the hotwords box starts with them)")
    args = parser.parse_args(argv)
    unusable = [w for w in args.hotword if not hotword_list(w) or "," in w]
    if unusable:
        parser.error(f"--hotword {unusable[0]!r}: give one word or phrase of letters a-z per --hotword")
    stop_on_sigterm()
    try:
        transcriber = Transcriber(args.model, lm=args.lm)
    except (CheckpointError, LMError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        if args.cli:
            return 2
        launch(notice_app(str(e)), args.host, args.port, args.share)
        return 0
    if args.cli:
        return run_cli(transcriber, args.hotword)
    # The live view's fast network (int8) is made once, here while the page loads, not at the first recording.
    threading.Thread(target=transcriber.partial_model, name="ds2-partial-model", daemon=True).start()
    launch(build_app(transcriber, args.samples, args.hotword), args.host, args.port, args.share, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
