from ds2.text import ALPHABET, decode_ids, encode, normalize_text, number_to_words, wer_cer


def test_alphabet_is_blank_space_apostrophe_letters():
    assert len(ALPHABET) == 29 and ALPHABET[:3] == ("_", " ", "'") and "".join(ALPHABET[3:]) == "abcdefghijklmnopqrstuvwxyz"


def test_normalize_text():
    assert normalize_text("Hello, World!  It's  “quoted” — café") == "hello world it's quoted cafe"
    assert normalize_text("In 1984 we had 3 cats") == "in one thousand nine hundred eighty four we had three cats"
    assert normalize_text("'tis the dogs' bone") == "tis the dogs bone"


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(2_000_001) == "two million one"


def test_encode_decode_round_trip():
    assert decode_ids(encode("Don't stop")) == "don't stop"


def test_wer_cer_is_summed_over_the_corpus():
    # One 1-word error in a 1-word and in a 9-word sentence: 2/10, not the mean of 100% and 11%.
    pairs = [("a", "b"), ("one two three four five six seven eight nine", "one two three four five six seven eight ten")]
    wer, _ = wer_cer(pairs)
    assert wer == 2 / 10
