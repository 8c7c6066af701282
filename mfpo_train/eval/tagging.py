"""Which tokens of a response are nouns, for AMBER's noun extraction (`nltk.pos_tag`, NN* tags).

Three ways, best first; `"auto"` takes the first one that is installed and the result says which:

- `"nltk"`: `nltk.pos_tag`, NLTK's averaged perceptron tagger: the reference's own. Needs NLTK's
  `averaged_perceptron_tagger_eng` data (`python -m nltk.downloader averaged_perceptron_tagger_eng`).
- `"aptagger"`: the averaged perceptron model that ships inside the PyPI package `textblob-aptagger`
  (M. Honnibal's, trained on the Wall Street Journal like NLTK's), run by NLTK's own
  `PerceptronTagger` code. It is the same kind of tagger but not NLTK's trained model: the two differ
  on some ambiguous words ("jumps", "red"), so numbers from it are labelled as such. The pickle is
  read with an unpickler that builds nothing but dicts and sets, and its sha256 is checked.
- `"rules"`: no tagger at all: a vocabulary word counts as a noun unless its neighbours show the verb
  or modal use a tagger reads there: after a modal or a subject pronoun ("I can see", "they watch"),
  after "to" that does not follow "next"/"close"/... ("about to ski"), "can" itself unless a
  determiner or adjective precedes it, and a word between a plural noun and a determiner or
  preposition ("people watch the game").
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from mfpo_data.errors import MfpoError, install_hint


METHODS = ("auto", "nltk", "aptagger", "rules")
APTAGGER_FILE = "trontagger-0.1.0.pickle"
APTAGGER_SHA256 = "1109164b3d28dce58f96b763128bab2fd8754c3921fd3330de2724ac6d1ada7c"  # textblob-aptagger 0.2.0

MODALS = frozenset("can could will would may might must shall should cannot ca wo 'll 'd".split())
SUBJECTS = frozenset("i you we they he she who".split())
DETERMINERS = frozenset("a an the this that these those his her its their our my your some each every".split())
PREPOSITIONS = frozenset("in on at near by with under over across along around into onto through from for down up "
                         "toward towards past behind".split())
BEFORE_TO = frozenset("next close due according up back down right left close similar attached adjacent "
                      "compared belonging leading going heading".split())  # "next to water": a noun
PLURAL_NOUNS = frozenset("people children men women persons kids".split())


def nltk_tagger_installed() -> bool:
    try:
        import nltk

        nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
    except (ImportError, LookupError):
        return False
    return True


def _aptagger_path() -> Path | None:
    spec = importlib.util.find_spec("textblob_aptagger")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / APTAGGER_FILE
    return path if path.is_file() else None


def resolve(method: str = "auto") -> str:
    """The tagger `method` stands for here; a named one that is not installed is a one-line error."""
    if method not in METHODS:
        raise MfpoError(f"amber nouns must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        return "nltk" if nltk_tagger_installed() else "aptagger" if _aptagger_path() else "rules"
    if method == "nltk" and not nltk_tagger_installed():
        raise MfpoError("amber nouns 'nltk' needs NLTK's tagger data: python -m nltk.downloader "
                        "averaged_perceptron_tagger_eng")
    if method == "aptagger" and _aptagger_path() is None:
        raise MfpoError("amber nouns 'aptagger' needs the package textblob-aptagger: " + install_hint("eval"))
    return method


class _DictsAndSets(pickle.Unpickler):
    def find_class(self, module, name):
        if module in ("__builtin__", "builtins") and name in ("dict", "set"):
            return {"dict": dict, "set": set}[name]
        raise pickle.UnpicklingError(f"{APTAGGER_FILE}: refusing to build {module}.{name}")


@lru_cache(maxsize=1)
def _aptagger():
    from nltk.tag.perceptron import PerceptronTagger

    data = _aptagger_path().read_bytes()
    if hashlib.sha256(data).hexdigest() != APTAGGER_SHA256:
        raise MfpoError(f"{_aptagger_path()}: not textblob-aptagger 0.2.0's model (sha256 differs)")
    weights, tagdict, classes = _DictsAndSets(io.BytesIO(data), encoding="latin1").load()
    tagger = PerceptronTagger(load=False)
    tagger.model.weights, tagger.tagdict, tagger.classes, tagger.model.classes = weights, tagdict, classes, classes
    return tagger


def pos_tags(tokens: Sequence[str], method: str) -> list[str]:
    """Penn Treebank tags of `tokens` by `method` ("nltk" or "aptagger", as `resolve` returns them)."""
    if method == "nltk":
        import nltk

        return [tag for _, tag in nltk.pos_tag(list(tokens))]
    if method == "aptagger":
        return [tag for _, tag in _aptagger().tag(list(tokens))]
    raise MfpoError(f"pos_tags: no tagger {method!r}")


def _rule_is_noun(tokens: Sequence[str], i: int) -> bool:
    low = [t.lower() for t in tokens]
    word, prev = low[i], (low[i - 1] if i else "")
    prev2, nxt = (low[i - 2] if i > 1 else ""), (low[i + 1] if i + 1 < len(low) else "")
    if prev in MODALS or prev in SUBJECTS or (prev == "to" and prev2 not in BEFORE_TO):
        return False
    if word in MODALS:  # "a can of soda" is a noun; "can see" is not
        return prev in DETERMINERS or prev in ("empty", "open", "tin", "metal", "soda", "beer", "trash")
    plural_before = prev in PLURAL_NOUNS or (prev.endswith("s") and not prev.endswith(("ss", "us", "is")) and len(prev) > 3)
    return not (plural_before and (nxt in DETERMINERS or nxt in PREPOSITIONS))


def noun_flags(tokens: Sequence[str], candidates: Callable[[str], bool], method: str) -> list[bool]:
    """For each token, whether it is read as a noun (NN*). With "rules", only tokens `candidates` accepts
    are examined (the rest are False)."""
    if method == "rules":
        return [candidates(t) and _rule_is_noun(tokens, i) for i, t in enumerate(tokens)]
    return [tag.startswith("NN") for tag in pos_tags(tokens, method)]
