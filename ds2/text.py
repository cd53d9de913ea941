"""The output alphabet and the text normalisation shared by training targets, LMs and scoring.

DS2 for English predicts characters: the CTC blank, space, apostrophe and a-z (29 symbols).
Normalisation lower-cases, spells out digits, folds accents and drops everything else, so that
training targets, language-model text and WER references all live in the same alphabet.
"""

import re
import unicodedata

BLANK = "_"  # index 0: the CTC blank; never appears in text
ALPHABET = (BLANK, " ", "'", *"abcdefghijklmnopqrstuvwxyz")
BLANK_ID = 0
SPACE_ID = 1
_CHAR_TO_ID = {c: i for i, c in enumerate(ALPHABET)}

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
        "fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words: 1984 -> 'one thousand nine hundred eighty four'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return number_to_words(head) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _spell_digits(match: re.Match) -> str:
    digits = match.group(0)
    if len(digits) > 15:  # a long digit string (a phone or serial number): read it digit by digit
        return " ".join(_ONES[int(d)] for d in digits)
    return " " + number_to_words(int(digits)) + " "


def normalize_text(text: str) -> str:
    """Map free text onto the alphabet: 'Hello, World 42!' -> 'hello world forty two'.

    Accents are folded (café -> cafe), typographic apostrophes become ', digits are spelled out,
    hyphens and other punctuation become word breaks, and whitespace is collapsed.
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"\d+", _spell_digits, text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes inside words
    return " ".join(text.split())


def encode(text: str) -> list[int]:
    """Normalise text and return its symbol ids (no blanks)."""
    return [_CHAR_TO_ID[c] for c in normalize_text(text)]


def decode_ids(ids) -> str:
    """Symbol ids (blanks ignored) back to text."""
    return "".join(ALPHABET[i] for i in ids if i != BLANK_ID)


def edit_distance(ref, hyp) -> int:
    """Levenshtein distance between two sequences (words or characters)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def error_counts(ref: str, hyp: str) -> tuple[int, int, int, int]:
    """(word errors, reference words, char errors, reference chars) after normalising both texts.

    Sum these over a corpus and divide once: corpus-level WER/CER, not an average of ratios.
    """
    ref, hyp = normalize_text(ref), normalize_text(hyp)
    return (edit_distance(ref.split(), hyp.split()), len(ref.split()), edit_distance(ref, hyp), len(ref))


def wer_cer(pairs) -> tuple[float, float]:
    """Corpus-level (WER, CER) over an iterable of (reference, hypothesis) pairs."""
    we = wn = ce = cn = 0
    for ref, hyp in pairs:
        a, b, c, d = error_counts(ref, hyp)
        we, wn, ce, cn = we + a, wn + b, ce + c, cn + d
    return we / max(wn, 1), ce / max(cn, 1)
