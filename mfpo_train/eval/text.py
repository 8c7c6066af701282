"""Tokeniser and singulariser for the CHAIR family of scorers, offline.

The reference CHAIR runs `nltk.word_tokenize` (Punkt sentences, then the Treebank word rules) and
`pattern.en.singularize` on every token. Neither runs offline as shipped: `word_tokenize` fetches
Punkt's English model and `pattern` does not install. Here:

- `tokenize` = NLTK's `PunktSentenceTokenizer` with no trained parameters (so no data download: it
  differs from the English model only on abbreviations such as "mr." or "st.", which it treats as
  sentence ends) followed by NLTK's `NLTKWordTokenizer`, the word rules `word_tokenize` applies.
- `singularize(word)` = `inflect`'s `singular_noun`, kept away from words that only look plural
  ("bus", "glass", "tennis", "this", "was").
- `singularize(word, reference=True)` returns what `pattern.en.singularize` 3.6 returns on every word
  the CHAIR vocabulary can be reached from (recorded once from pattern's code into
  `data/pattern_singular.tsv`), including its mistakes: "bus" -> "bu", "glass" -> "glas",
  "tennis" -> "tenni". That is why the reference patches "wine glas" and never counts a singular "bus".
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from mfpo_data.errors import MissingExtraError


# Words that end in "s" without being plural nouns; inflect would cut them ("was" -> "wa").
_NOT_PLURAL = frozenset(
    "as is us was has his its this thus yes gas does goes always perhaps whereas besides towards afterwards "
    "sometimes across less unless plus news series species lens means physics mathematics politics "
    "scissors pants jeans shorts trousers binoculars tennis axis iris chassis penis pelvis trellis".split()
)  # fmt: skip
_KEEP_SUFFIXES = ("ss", "us", "sis", "ous", "ics")  # glass, bus, oasis, ...: singular words
_PLURAL_US = frozenset("zebus emus gnus menus tutus".split())


@lru_cache(maxsize=1)
def _tokenizers():
    try:
        from nltk.tokenize.destructive import NLTKWordTokenizer
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("the scorers need nltk: pip install 'mfpo[eval]'") from e
    return PunktSentenceTokenizer(), NLTKWordTokenizer()


@lru_cache(maxsize=1)
def _inflect():
    try:
        import inflect
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("the scorers need inflect: pip install 'mfpo[eval]'") from e
    return inflect.engine()


def tokenize(text: str) -> list[str]:
    """Words and punctuation of `text`, as `nltk.word_tokenize` splits them (see the module notes)."""
    sentences, words = _tokenizers()
    return [tok for sent in sentences.tokenize(text) for tok in words.tokenize(sent)]


@lru_cache(maxsize=1)
def _pattern_table() -> dict[str, str]:
    table = {}
    text = resources.files("mfpo_train.eval").joinpath("data/pattern_singular.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            word, singular = line.split("\t")
            table[word] = singular
    return table


@lru_cache(maxsize=200_000)
def _singular(word: str) -> str:
    if "-" in word.strip("-"):
        head, _, last = word.rpartition("-")
        return f"{head}-{_singular(last)}"
    if len(word) < 3 or not word.isalpha() or word in _NOT_PLURAL:
        return word
    if word.endswith(_KEEP_SUFFIXES) and word not in _PLURAL_US:
        return word
    singular = _inflect().singular_noun(word)
    return singular if isinstance(singular, str) and singular else word


def singularize(word: str, reference: bool = False) -> str:
    """The singular of a (lower-case) token; other tokens come back as they are.

    `reference=True` reproduces `pattern.en.singularize` on the words that matter to CHAIR.
    """
    if reference:
        hit = _pattern_table().get(word)
        if hit is not None:
            return hit
    return _singular(word)
