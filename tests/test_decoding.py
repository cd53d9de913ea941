"""CTC decoding (greedy, beam, beam + KenLM) on hand-written emissions, and the LM recipe's pieces."""

import json
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ds2.decoding import BeamDecoder, LMError, LMParams, greedy_decode, greedy_path, hotword_list, offset_blank
from ds2.text import ALPHABET
from train import lm as recipe

FRAME = 0.02  # seconds per output frame in these tests
IDS = {c: i for i, c in enumerate(ALPHABET)}


def emissions(frames, p=0.9) -> np.ndarray:
    """(T, V) log-probs: a frame is a symbol ("_" blank) with probability p, or a {symbol: prob} dict;
    the rest of each frame's mass is spread over the other symbols."""
    out = []
    for frame in frames:
        probs = frame if isinstance(frame, dict) else {frame: p}
        row = np.full(len(ALPHABET), (1 - sum(probs.values())) / (len(ALPHABET) - len(probs)))
        for symbol, prob in probs.items():
            row[IDS[symbol]] = prob
        out.append(np.log(row))
    return np.array(out, dtype=np.float32)


# "the c?t": the second letter of the last word is s (0.5) or a (0.4)
AMBIGUOUS = emissions([*"tthe_ _c", {"s": 0.5, "a": 0.4}, *"t__"])


def write_arpa(path, unigrams: dict, bigrams: dict) -> None:
    """A hand-written ARPA bigram model: {word: log10 p} and {"w1 w2": log10 p} (back-off weights 0)."""
    unigrams = {"<unk>": -3.0, "<s>": -99.0, "</s>": -1.0, **unigrams}
    lines = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    lines += [f"{p}\t{w}\t0" for w, p in unigrams.items()] + ["", "\\2-grams:"]
    lines += [f"{p}\t{w}" for w, p in bigrams.items()] + ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture
def arpa(tmp_path):
    pytest.importorskip("kenlm")
    path = tmp_path / "tiny.arpa"
    write_arpa(path, {"the": -1.0, "cat": -1.5, "sat": -1.5, "mat": -2.0, "on": -1.5},
               {"<s> the": -0.3, "the cat": -0.5, "cat sat": -0.3, "sat on": -0.3, "on the": -0.3, "the mat": -0.7,
                "mat </s>": -0.3, "cat </s>": -0.5})
    return path


@pytest.fixture
def lm_decoder(arpa):
    return BeamDecoder(arpa)


def test_greedy_collapses_repeats_and_drops_blanks():
    lp = emissions("hh_e_ll_llo")
    assert greedy_path(lp).tolist() == [IDS[c] for c in "hh_e_ll_llo"]
    decoded = greedy_decode(lp, FRAME)
    assert decoded.text == "hello"
    (word,) = decoded.words
    assert (word.word, word.start, word.end) == ("hello", 0.0, pytest.approx(11 * FRAME))
    assert word.confidence == pytest.approx(0.9)


def test_greedy_word_times_follow_first_and_last_letter():
    decoded = greedy_decode(emissions("__hi  __thhere_ _"), FRAME, time_offset=1.0)
    assert decoded.text == "hi there"
    assert [(w.word, round(w.start, 3), round(w.end, 3)) for w in decoded.words] == [
        ("hi", 1.04, 1.08), ("there", 1.16, 1.28)]


def test_greedy_confidence_is_mean_max_probability():
    lp = emissions(["h", {"i": 0.5}])
    assert greedy_decode(lp, FRAME).words[0].confidence == pytest.approx(0.7)


def test_empty_and_all_blank_emissions_decode_to_nothing():
    for lp in (np.zeros((0, len(ALPHABET)), np.float32), emissions("____")):
        assert greedy_decode(lp, FRAME).text == ""
    beam = BeamDecoder()
    assert beam.decode(np.zeros((0, len(ALPHABET)), np.float32), FRAME).text == ""
    assert beam.decode(emissions("____"), FRAME).text == ""


def test_beam_without_lm_decodes_acoustically_and_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no LM file was given: a choice, nothing to warn about
        beam = BeamDecoder()
        assert not beam.has_lm
        assert beam.decode(AMBIGUOUS, FRAME).text == "the cst"
        assert beam.decode(AMBIGUOUS, FRAME).text == "the cst"


def test_lm_file_without_kenlm_warns_and_decodes_acoustically(arpa, monkeypatch):
    from ds2 import decoding
    monkeypatch.setattr(decoding.importlib.util, "find_spec", lambda name: None)
    with pytest.warns(UserWarning, match="kenlm is not installed") as record:
        beam = BeamDecoder(arpa)
    assert len(record) == 1 and not beam.has_lm
    assert beam.decode(AMBIGUOUS, FRAME).text == "the cst"


def test_beam_word_times_match_greedy_on_clear_emissions():
    beam = BeamDecoder()
    lp = emissions("__hi  __thhere__")
    assert beam.decode(lp, FRAME, time_offset=2.0) == greedy_decode(lp, FRAME, time_offset=2.0)


def test_lm_prefers_in_vocabulary_word_where_greedy_does_not(lm_decoder):
    assert lm_decoder.has_lm
    assert greedy_decode(AMBIGUOUS, FRAME).text == "the cst"
    decoded = lm_decoder.decode(AMBIGUOUS, FRAME)
    assert decoded.text == "the cat"
    # the LM changed a letter the acoustics preferred: the word is less confident than "the"
    assert decoded.words[1].confidence < decoded.words[0].confidence


def test_alpha_override_changes_result_without_reloading(lm_decoder, arpa):
    arpa.unlink()  # a reload would now fail
    assert lm_decoder.decode(AMBIGUOUS, FRAME, alpha=0.0).text == "the cst"
    assert lm_decoder.decode(AMBIGUOUS, FRAME).text == "the cat"  # overrides do not stick


def test_beta_is_a_bonus_per_word(lm_decoder):
    without, with_bonus = (lm_decoder.beams(AMBIGUOUS, alpha=0.5, beta=b)[0] for b in (0.0, 1.5))
    assert without.text == with_bonus.text == "the cat"
    assert with_bonus.acoustic_score == pytest.approx(without.acoustic_score)
    assert with_bonus.lm_score - without.lm_score == pytest.approx(2 * 1.5)


def test_beams_are_ranked_and_scores_add_up(lm_decoder):
    beams = lm_decoder.beams(AMBIGUOUS, top_k=3, alpha=0.2)  # at 0.5 "cst" falls out of the beam
    assert 1 < len(beams) <= 3 and beams[0].text == "the cat"
    assert [b.total_score for b in beams] == sorted((b.total_score for b in beams), reverse=True)
    for b in beams:
        assert b.total_score == pytest.approx(b.acoustic_score + b.lm_score)
    assert any(b.text == "the cst" for b in beams)


def test_hotwords_pull_the_search_towards_them():
    beam = BeamDecoder()
    lp = emissions([*"the_ _c", {"a": 0.5, "u": 0.4}, *"t__"])
    assert beam.decode(lp, FRAME).text == "the cat"
    assert beam.decode(lp, FRAME, hotwords=["CUT"]).text == "the cut"  # hotwords are normalised
    assert beam.decode(lp, FRAME, hotwords=["cut"], hotword_weight=0.0).text == "the cat"


def test_one_hotword_string_is_one_hotword_and_a_bad_weight_is_refused():
    beam = BeamDecoder()
    lp = emissions([*"the_ _c", {"a": 0.5, "u": 0.4}, *"t__"])
    assert beam.decode(lp, FRAME, hotwords="cut").text == "the cut"  # the word, not the letters c, u and t
    assert hotword_list(["New York", "!!", "O'Brien", ""]) == ["new york", "o'brien"]
    for weight in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="hotword_weight"):
            beam.decode(lp, FRAME, hotwords=["cut"], hotword_weight=weight)


def test_from_dir_reads_lm_json(arpa, tmp_path):
    (tmp_path / "unigrams.txt").write_text("the\ncat\nsat\nmat\non\n")
    (tmp_path / "lm.json").write_text(json.dumps({"lm": arpa.name, "unigrams": "unigrams.txt", "alpha": 0.0,
                                                  "beta": 2.0, "beam_width": 16, "order": 2}))
    decoder = BeamDecoder.from_dir(tmp_path)
    assert decoder.has_lm and decoder.params == LMParams(alpha=0.0, beta=2.0, beam_width=16)
    assert decoder.decode(AMBIGUOUS, FRAME).text == "the cst"  # alpha 0 from lm.json: acoustics alone
    assert decoder.decode(AMBIGUOUS, FRAME, alpha=1.0).text == "the cat"


@pytest.mark.parametrize("text", ['{"lm": "lm.bin",', '{"unigrams": null}', '{"lm": "lm.bin", "alpha": "strong"}', "[]"])
def test_from_dir_names_a_broken_lm_json(text, tmp_path):
    (tmp_path / "lm.json").write_text(text)
    with pytest.raises(LMError, match=r"lm.json: not a valid LM config"):
        BeamDecoder.from_dir(tmp_path)


def test_tune_picks_the_alpha_that_fixes_the_error(arpa, tmp_path):
    (tmp_path / "lm.json").write_text(json.dumps({"lm": arpa.name, "unigrams": None}))
    items = [(AMBIGUOUS, "the cat"), (emissions("tthe__ _mmat__"), "the mat")]
    alpha, beta, unk, blank, table = recipe.tune(items, tmp_path, alphas=(0.0, 1.0), betas=(0.0,), beam_width=16)
    assert (alpha, beta, unk, blank) == (1.0, 0.0, -10.0, 0.0)
    assert table == [(0.0, 0.0, -10.0, 0.0, 0.25), (1.0, 0.0, -10.0, 0.0, 0.0)]
    assert json.loads((tmp_path / "lm.json").read_text())["alpha"] == 1.0


def test_tune_picks_the_unknown_word_penalty_that_fixes_the_error(arpa, tmp_path):
    (tmp_path / "lm.json").write_text(json.dumps({"lm": arpa.name, "unigrams": None, "alpha": 0.2}))
    cot = emissions([*"tthe_ _c", {"o": 0.8, "a": 0.15}, *"t__"])  # "cot" is not in the LM, "cat" is
    decoder = BeamDecoder.from_dir(tmp_path)
    assert decoder.decode(cot, FRAME, beam_width=16).text == "the cat"  # lm.json's default: -10
    assert decoder.decode(cot, FRAME, beam_width=16, unk_score_offset=0.0).text == "the cot"
    alpha, beta, unk, blank, table = recipe.tune([(cot, "the cot")], tmp_path, alphas=(0.2,), betas=(0.0,),
                                                 beam_width=16, unk_offsets=(-10.0, 0.0))
    assert unk == 0.0 and [row[4] for row in table] == [0.5, 0.0]
    assert json.loads((tmp_path / "lm.json").read_text())["unk_score_offset"] == 0.0
    assert BeamDecoder.from_dir(tmp_path).decode(cot, FRAME, beam_width=16).text == "the cot"


# "the c?t" again, but the network hedges the a with the blank: 0.55 blank, 0.4 a
HEDGED = emissions([*"tthe_ _c", {"_": 0.55, "a": 0.4}, *"t__"])


def test_offset_blank_lowers_the_blank_and_keeps_the_other_ratios():
    lowered = offset_blank(HEDGED, -1.0)
    assert offset_blank(HEDGED, 0.0) is HEDGED
    np.testing.assert_allclose(np.logaddexp.reduce(lowered, axis=1), 0.0, atol=1e-5)  # still distributions
    assert (lowered[:, IDS["_"]] < HEDGED[:, IDS["_"]]).all()
    others = [i for i in range(len(ALPHABET)) if i != IDS["_"]]
    np.testing.assert_allclose(lowered[:, others] - lowered[:, [IDS["a"]]], HEDGED[:, others] - HEDGED[:, [IDS["a"]]],
                               atol=1e-5)
    frame = 8  # the hedged frame: blank 0.55 * e^-1 against a 0.4
    assert lowered[frame].argmax() == IDS["a"] and HEDGED[frame].argmax() == IDS["_"]


def test_a_blank_offset_gives_back_a_letter_the_blank_hedged(tmp_path):
    plain = BeamDecoder()
    assert plain.decode(HEDGED, FRAME, beam_width=16).text == "the ct"
    lowered = plain.decode(HEDGED, FRAME, beam_width=16, blank_offset=-1.0)
    assert lowered.text == "the cat"
    assert BeamDecoder(params=LMParams(blank_offset=-1.0)).decode(HEDGED, FRAME, beam_width=16) == lowered
    cat = lowered.words[1]  # its confidence comes from the network's own probabilities, not the lowered ones
    frames = np.exp(HEDGED)[round(cat.start / FRAME):round(cat.end / FRAME)][:, [IDS[c] for c in "_cat"]]
    assert cat.confidence == pytest.approx(frames.max(axis=1).mean())
    with pytest.raises(ValueError, match="blank_offset=nan"):
        plain.decode(HEDGED, FRAME, blank_offset=float("nan"))
    with pytest.raises(ValueError, match="blank_offset=inf"):
        LMParams(blank_offset=float("inf"))
    (tmp_path / "lm.json").write_text('{"lm": "lm.bin", "blank_offset": NaN}')
    with pytest.raises(LMError, match="blank_offset=nan"):
        BeamDecoder.from_dir(tmp_path)


def test_tune_picks_the_blank_offset_that_fixes_the_error(arpa, tmp_path):
    (tmp_path / "lm.json").write_text(json.dumps({"lm": arpa.name, "unigrams": None, "alpha": 0.0}))
    alpha, beta, unk, blank, table = recipe.tune([(HEDGED, "the cat")], tmp_path, alphas=(0.0,), betas=(0.0,),
                                                 beam_width=16, blank_offsets=(0.0, -1.0))
    assert blank == -1.0 and [row[3:] for row in table] == [(0.0, 0.5), (-1.0, 0.0)]
    assert json.loads((tmp_path / "lm.json").read_text())["blank_offset"] == -1.0
    assert BeamDecoder.from_dir(tmp_path).decode(HEDGED, FRAME, beam_width=16).text == "the cat"


def test_beam_sweep_keeps_the_fastest_setting_within_the_tolerance(arpa, tmp_path):
    (tmp_path / "lm.json").write_text(json.dumps({"lm": arpa.name, "unigrams": None, "alpha": 1.0}))
    items = [(AMBIGUOUS, "the cat"), (emissions("tthe__ _mmat__"), "the mat")] * 20
    chosen, rows = recipe.sweep_beams(items, tmp_path, widths=(1, 16), prune_logps=(-10.0,),
                                      token_min_logps=(-5.0,), tolerance=1.0)
    assert [(r["beam_width"], r["wer"]) for r in rows] == [(1, rows[0]["wer"]), (16, 0.0)]
    assert chosen == min(rows, key=lambda r: r["seconds"])  # a tolerance of 100 points: speed alone decides
    _, rows = recipe.sweep_beams(items, tmp_path, widths=(1, 16), prune_logps=(-10.0,), token_min_logps=(-5.0,),
                                 tolerance=0.0)
    best = min(rows, key=lambda r: (r["wer"], r["seconds"]))
    written = json.loads((tmp_path / "lm.json").read_text())
    assert written["beam_width"] == best["beam_width"]
    assert written["tuned_wer"] == round(best["wer"], 4) and written["tuned_utterances"] == len(items)


# --- the LM recipe (train/lm.py) ---

def test_sentences_split_and_normalise_book_prose():
    text = 'Mr. Weston came in. "Well?" said Mrs. Elton [Illustration: a hat] at 3; it is n\'t so!'
    assert recipe.sentences(text) == ["mister weston came in", "well", "said missus elton at three it isn't so"]


def test_paragraphs_join_hard_wrapped_lines():
    lines = ["It was a dark\n", "and stormy night.\n", "\n", "CHAPTER I\n", "\n", "She sat\n", "down\n"]
    assert list(recipe.paragraphs(lines)) == ["It was a dark and stormy night.", "CHAPTER I", "She sat down"]


def test_book_files_leave_out_the_librispeech_transcripts(tmp_path):
    for name in ("books.txt.xz", "librispeech-dev-clean.txt", "gutenberg/emma.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in recipe.book_files(tmp_path)] == [
        "books.txt.xz", "gutenberg/emma.txt"]


def test_corpus_reads_manifests_and_id_text_transcript_lists_repeated(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "Enter 7", "duration": 1}) + "\n")
    (tmp_path / "dev-clean.txt").write_text("1272-128104-0000 MISTER QUILTER'S MANNER\n\n1272-128104-0001\n")
    assert recipe.transcripts(tmp_path / "dev-clean.txt") == ["mister quilter's manner"]
    assert list(recipe.corpus([], [tmp_path / "train.jsonl", tmp_path / "dev-clean.txt"], manifest_repeat=2)) == [
        "enter seven", "enter seven", "mister quilter's manner", "mister quilter's manner"]


def test_pruning_has_one_threshold_per_order_and_keeps_unigrams():
    assert recipe.pruning("0 1 1 2", 3) == "0 1 1"
    assert recipe.pruning("0 1", 4) == "0 1 1 1"
    assert recipe.pruning("0 1 1 2", 4, more=1) == "0 2 2 3"


def test_arpa_words_are_the_unigrams(arpa):
    assert recipe.arpa_words(arpa) == ["the", "cat", "sat", "mat", "on"]


@pytest.fixture
def kenlm_bin():
    bin_dir = recipe.KENLM_CACHE / "bin"
    if not (bin_dir / "lmplz").exists():
        pytest.skip(f"KenLM binaries not built in {bin_dir}; `python -m train.lm build` builds them once")
    return bin_dir


@pytest.fixture
def tiny_text(tmp_path):
    (tmp_path / "text" / "gutenberg").mkdir(parents=True)
    book = "The cat sat on the mat. The dog sat on the log!\nA cat and a dog.\n" * 20
    (tmp_path / "text" / "gutenberg" / "book.txt").write_text(book)
    return tmp_path / "text"


def test_overlap_finds_test_sentences_in_the_lm_text(tiny_text, tmp_path):
    rows = [{"audio": "a.wav", "duration": 1, "text": t} for t in (
        "A dog. The cat sat on",  # across a sentence end of the book ("a dog the cat"): found
        "the mat sat on the dog",  # every word is in the book, never four of them in a row
        "a cat",  # shorter than n: not checked
        "THE COW RAN FAST TODAY")]  # in the LM's training transcripts only
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "train.jsonl").write_text(json.dumps({"audio": "b.wav", "duration": 1, "text": "the cow ran fast today"}))
    [books_only] = recipe.overlap([tmp_path / "test.jsonl"], tiny_text, n=4)
    assert (books_only["transcripts"], books_only["long_enough"], books_only["sharing"]) == (4, 3, 1)
    assert (books_only["ngrams"], books_only["ngrams_found"]) == (3 + 3 + 2, 3)
    [with_train] = recipe.overlap([tmp_path / "test.jsonl"], tiny_text, [tmp_path / "train.jsonl"], n=4)
    assert with_train["sharing"] == 2


def test_tune_can_leave_out_dev_utterances_the_lm_has_read(arpa, tiny_text, tmp_path, capsys):
    (tmp_path / "lm.json").write_text(json.dumps({"lm": arpa.name, "unigrams": None}))
    read = "the cat sat on the mat the dog"  # 8 words of the book, across a sentence end
    np.savez(tmp_path / "dev.npz", refs=np.array([read, "the cat"]), lp_0=emissions(read), lp_1=AMBIGUOUS)
    recipe.main(["tune", "--emissions", str(tmp_path / "dev.npz"), "--lm-dir", str(tmp_path), "--alphas", "1",
                 "--betas", "0", "--beam-width", "8", "--leave-out-overlap", str(tiny_text),
                 "--unk-offsets", "-10", "-3", "--blank-offsets", "0", "-0.5"])
    out = capsys.readouterr().out
    assert "left out 1 of 2 utterances" in out
    assert out.count("unk -10.0") == 2 and out.count("unk  -3.0") == 2  # every grid point is printed
    assert out.count("blank  0.00") == 2 and out.count("blank -0.50") == 2
    # equal WERs: the first point wins
    assert "best: alpha 1.0 beta 0.0 unk_score_offset -10.0 blank_offset 0.0" in out
    assert json.loads((tmp_path / "lm.json").read_text())["tuned_utterances"] == 1


@pytest.mark.parametrize("command", ["tune", "beams"])
def test_tune_and_beams_refuse_missing_inputs_before_any_work(command, tmp_path, capsys):
    (tmp_path / "lm").mkdir()
    np.savez(tmp_path / "dev.npz", refs=np.array(["the cat"]), lp_0=AMBIGUOUS)
    for emissions, lm_dir, named in [(tmp_path / "none.npz", tmp_path / "lm", "none.npz"),
                                     (tmp_path / "dev.npz", tmp_path / "lm", "no lm.json"),
                                     (tmp_path / "dev.npz", tmp_path / "nowhere", "nowhere")]:
        with pytest.raises(SystemExit) as exit_info:
            recipe.main([command, "--emissions", str(emissions), "--lm-dir", str(lm_dir)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err


def test_tune_refuses_a_blank_offset_that_is_not_a_number(tmp_path, capsys):
    (tmp_path / "lm.json").write_text(json.dumps({"lm": "lm.bin"}))
    np.savez(tmp_path / "dev.npz", refs=np.array(["the cat"]), lp_0=AMBIGUOUS)
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["tune", "--emissions", str(tmp_path / "dev.npz"), "--lm-dir", str(tmp_path),
                     "--blank-offsets", "0", "nan"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--blank-offsets 0.0 nan: give finite numbers" in err and "Traceback" not in err


def test_build_runs_lmplz_on_a_tiny_corpus(kenlm_bin, tiny_text, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    (tmp_path / "train.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "THE CAT RAN", "duration": 1}) + "\n")
    info = recipe.build(tmp_path / "lm", tiny_text, [tmp_path / "train.jsonl"], order=3, prune="0", memory="100M",
                        bin_dir=kenlm_bin)
    assert info["sentences"] == 61 and info["vocabulary"] == 10
    assert "ran" in (tmp_path / "lm" / "unigrams.txt").read_text().split()
    model = kenlm.Model(str(tmp_path / "lm" / "lm.bin"))
    assert model.score("the cat sat on the mat") > model.score("mat the on sat cat the")
    assert BeamDecoder.from_dir(tmp_path / "lm").decode(AMBIGUOUS, FRAME).text == "the cat"


def test_build_gives_up_when_no_pruning_fits(kenlm_bin, tiny_text, tmp_path):
    with pytest.raises(RuntimeError, match="pruning steps"):
        recipe.build(tmp_path / "lm", tiny_text, order=3, max_mb=1e-4, memory="100M", bin_dir=kenlm_bin)


def test_given_vocabulary_decodes_like_pyctcdecodes_own_trie(arpa):
    """The prefix set that replaces pyctcdecode's CharTrie gives the same beams."""
    vocabulary = ["the", "cat", "sat", "mat", "on"]
    ours, theirs = BeamDecoder(arpa, vocabulary), BeamDecoder(arpa)  # theirs: the trie, words from the ARPA
    rng = np.random.default_rng(0)
    for lp in [AMBIGUOUS, *(np.log(rng.dirichlet(np.ones(len(ALPHABET)) * 0.3, 40)).astype(np.float32) for _ in range(5))]:
        assert [(b.text, round(b.total_score, 4)) for b in ours.beams(lp, 5, alpha=0.5)] == \
               [(b.text, round(b.total_score, 4)) for b in theirs.beams(lp, 5, alpha=0.5)]


def test_searches_with_the_same_weights_run_side_by_side_and_others_wait(lm_decoder, monkeypatch):
    """A live session's final decode and its next partial one search at once; a search with other
    LM weights must not change them under a running one (alpha and beta live on the shared LM)."""
    inner, lm = lm_decoder._decoder.decode_beams, lm_decoder._decoder._language_model
    both_inside, release, entered = threading.Barrier(2, timeout=10), threading.Event(), []

    def decode_beams(*args, **kwargs):
        entered.append(lm.alpha)
        if len(entered) <= 2:
            both_inside.wait()  # the first two (same weights) are inside together, or this times out
        if len(entered) == 3:
            release.wait(10)  # hold this search while another with other weights asks
        alpha = lm.alpha
        out = inner(*args, **kwargs)
        assert lm.alpha == alpha  # nobody changed the weights during the search
        return out

    monkeypatch.setattr(lm_decoder._decoder, "decode_beams", decode_beams)
    with ThreadPoolExecutor(2) as pool:
        assert [f.result().text for f in [pool.submit(lm_decoder.decode, AMBIGUOUS, FRAME) for _ in range(2)]] \
            == ["the cat", "the cat"]
        held = pool.submit(lm_decoder.decode, AMBIGUOUS, FRAME)
        while len(entered) < 3:
            time.sleep(0.01)
        other = pool.submit(lm_decoder.decode, AMBIGUOUS, FRAME, alpha=0.0)
        time.sleep(0.3)
        assert len(entered) == 3  # it waits for the held search to end
        release.set()
        assert held.result().text == "the cat" and other.result().text == "the cst"
    assert entered[3] == 0.0 and lm_decoder.decode(AMBIGUOUS, FRAME).text == "the cat"
