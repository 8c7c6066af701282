"""Tokeniser, singulariser and noun lemmatiser for the CHAIR family of scorers, offline.

The reference CHAIR runs `nltk.word_tokenize` and `pattern.en.singularize` on every token; RLAIF-V's
Object HalBench and AMBER run `nltk.word_tokenize` and NLTK's `WordNetLemmatizer`. None of them runs
offline as shipped: `word_tokenize` fetches Punkt's English model, the lemmatiser fetches WordNet, and
`pattern` does not install. Here:

- `tokenize` = NLTK's `PunktSentenceTokenizer` with no trained parameters (no data download: it
  differs from the English model only on abbreviations such as "mr." or "st.", which it treats as
  sentence ends) followed by `NLTKWordTokenizer`, the word rules `word_tokenize` applies. The rules
  reproduced are those of the installed nltk (3.9 or later), not of nltk 3.2.5, which the reference
  CHAIR pins: the two split single-quoted words differently ("'cat'" is "'cat" + "'" in 3.2.5 and
  "'" + "cat" + "'" today), so a caption that quotes an object word can differ from a 3.2.5 run.
- `singularize(word, reference=True)` is `pattern.en.singularize` (pattern 3.6): a table recorded from
  pattern's own code (`data/pattern_singular.tsv`) over every token whose singular is a CHAIR word
  or that is one (the synonym lists, their plurals, and every one-word WordNet lemma with its plurals).
  A token outside the table is returned as it is, which for CHAIR is what pattern's answer amounts
  to: it is not a CHAIR word. Pattern's mistakes are kept: "bus" -> "bu", "glass" -> "glas",
  "tennis" -> "tenni", "ties" -> "ty", which is why the reference never counts a singular "bus".
- `singularize(word)` (the fixed vocabulary's) is `inflect`'s `singular_noun`, kept away from words
  that only look plural ("bus", "glass", "tennis", "this", "was").
- `lemmatize(word)` is `nltk.stem.WordNetLemmatizer().lemmatize(word)` (noun), the same algorithm as
  nltk 3.10 (WordNet's exception list, then the suffix rules, the shortest form that is a WordNet noun)
  run on WordNet 3.0's noun index and noun exceptions shipped in `data/` (see the README there).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

from mfpo_data.errors import MissingExtraError, install_hint


# Words that end in "s" without being plural nouns; inflect would cut them ("was" -> "wa").
_NOT_PLURAL = frozenset(
    "as is us was has his its this thus yes gas does goes always perhaps whereas besides towards afterwards "
    "sometimes across less unless plus news series species lens means physics mathematics politics "
    "scissors pants jeans shorts trousers binoculars tennis axis iris chassis penis pelvis trellis".split()
)  # fmt: skip
_KEEP_SUFFIXES = ("ss", "us", "sis", "ous", "ics")  # glass, bus, oasis, ...: singular words
_PLURAL_US = frozenset("zebus emus gnus menus tutus".split())
# WordNet's noun suffix rules, in nltk's order (`WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS`).
_NOUN_RULES = (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
               ("men", "man"), ("ies", "y"))  # fmt: skip


@lru_cache(maxsize=1)
def _tokenizers():
    try:
        from nltk.tokenize.destructive import NLTKWordTokenizer
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("the scorers need nltk: " + install_hint("eval")) from e
    return PunktSentenceTokenizer(), NLTKWordTokenizer()


@lru_cache(maxsize=1)
def _inflect():
    try:
        import inflect
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("the scorers need inflect: " + install_hint("eval")) from e
    return inflect.engine()


def _data(name: str):
    return resources.files("mfpo_data.scorers").joinpath(f"data/{name}")


def tokenize(text: str) -> list[str]:
    """Words and punctuation of `text`, as `nltk.word_tokenize` splits them (see the module notes)."""
    sentences, words = _tokenizers()
    return [tok for sent in sentences.tokenize(text) for tok in words.tokenize(sent)]


@lru_cache(maxsize=1)
def _pattern_table() -> dict[str, str]:
    table = {}
    for line in _data("pattern_singular.tsv").read_text(encoding="utf-8").splitlines():
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
    if word.endswith("children"):  # grandchildren, schoolchildren: inflect knows only "children"
        return word[:-3]
    singular = _inflect().singular_noun(word)
    return singular if isinstance(singular, str) and singular else word


def singularize(word: str, reference: bool = False) -> str:
    """The singular of a (lower-case) token; other tokens come back as they are.

    `reference=True` is `pattern.en.singularize` on every token that can be a CHAIR word (module notes).
    """
    if reference:
        return _pattern_table().get(word, word)
    return _singular(word)


@lru_cache(maxsize=1)
def _wordnet() -> tuple[frozenset[str], dict[str, list[str]]]:
    with gzip.open(_data("wordnet_nouns.txt.gz").open("rb"), "rt", encoding="utf-8") as f:
        nouns = frozenset(f.read().split("\n")) - {""}
    exceptions = {}
    for line in _data("wordnet_noun_exc.tsv").read_text(encoding="utf-8").splitlines():
        form, _, lemmas = line.partition("\t")
        exceptions[form] = lemmas.split(" ")
    return nouns, exceptions


@lru_cache(maxsize=200_000)
def lemmatize(word: str) -> str:
    """`WordNetLemmatizer().lemmatize(word)` of nltk 3.10 (noun), on WordNet 3.0: the shortest WordNet noun
    among the word, its exception-list lemmas (or else its suffix-rule forms); the word itself when none is."""
    nouns, exceptions = _wordnet()
    forms = exceptions[word] if word in exceptions else [word[: -len(old)] + new for old, new in _NOUN_RULES
                                                         if word.endswith(old)]
    found = [f for f in dict.fromkeys([word, *forms]) if f in nouns]
    return min(found, key=len) if found else word
