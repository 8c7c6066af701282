"""Keywords ranked on a word graph, as the MFPO paper describes (no model weights).

1. **Candidates**: noun phrases found without a tagger. Text is split into word runs at punctuation
   and function words (determiners, pronouns, prepositions, auxiliaries, common verbs, adverbs,
   numbers). A run's last noun-like word is its head; adjectives and nouns before it are modifiers;
   trailing adjectives ("the dog is brown") are not heads. `-ing`/`-ed` words count as modifiers only
   right after a determiner or adjective ("a sleeping cat", "a stuffed bear"), otherwise as verbs.
   Multi-word COCO names ("hot dog", "teddy bear") are one word.
2. **Topics**: candidates are grouped by head lemma, and heads that name the same COCO category
   ("kitten", "cat") share a topic. Heads on the visual stop list (abstract nouns, "image",
   "picture", positions such as "left", colours alone) are dropped.
3. **Graph** (multipartite: no edges inside a topic). Edge weight between candidates i and j of
   different topics: `theta_ij = sum over occurrence pairs 1 / (1 + |l_i - l_j| ** phi)` (l = word
   position), plus `gamma * max(0, cos(v_i, v_j))` when `embedding_model` is set. The teleport
   prior of a candidate is `sum over its occurrences exp(-lambda * l)` (earlier = higher), times
   `vocabulary_prior` when its head names a COCO object: the COCO vocabulary is a prior, not a filter.
4. **Weighted PageRank** (damping `alpha`, power iteration in numpy) on that graph; a topic scores
   its best candidate; the top topics are returned (the first-seen candidate phrase of each), ranked.

With `prefer_target`, a pair's own target object (known for rule-built COCO pairs) comes first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from mfpo_data._deps import loading_model
from mfpo_data.backends.base import Described
from mfpo_data.schema import Sample
from mfpo_data.textpairs.vocabulary import SYNONYMS, category_of


_FUNCTION = set("""
a an the this that these those some any each every no another other such both either neither all its
i me my mine we us our ours you your yours he him his she her hers it they them their theirs one ones
there here what which who whom whose where when why how whether if then than so as because while
of in on at to from by with without into onto over under above below behind beside besides between among
near next through across along around against toward towards upon within about after before during
up down out off away inside outside beneath underneath throughout via per like unlike except beyond
and or but nor yet also not never only just even still very quite rather too really almost mostly
is are was were be been being am isn't aren't wasn't weren't do does did doing done don't doesn't didn't
have has had having haven't hasn't can could may might must shall should will would can't couldn't won't
yes no none nothing something anything everything someone anyone everyone somebody nobody
many much more most few several lot lots plenty various numerous multiple single
appears appear appeared seem seems seemed looks look looked looking
two three four five six seven eight nine ten eleven twelve dozen dozens hundreds first second third
""".split())
_NEGATIONS = {"no", "not", "without", "neither", "nor", "never", "isn't", "aren't", "wasn't", "weren't"}

_VERBS = """sit stand hold wear ride lie lay play eat drink walk run carry show appear contain include
feature depict have sleep rest fly swim jump throw catch kick hit swing look watch face stare talk
smile cook cut use read write type drive park wait cross graze fill cover surround line place put
set hang lean rest float sail land take make give get go come move pull push sell display decorate
serve top stack perform pose dress help touch grab reach point raise hug kiss chase bite lick climb
paint prepare work seem remain stay keep feel hover skate ski surf bat pitch stretch smell shine
glow grow bloom perch walk fly drive overlook border frame open close fold tie brush comb shave wash clean
reflect capture see rise peck toss gather roll spray curl crouch mark speed blow pour chop wander enjoy chat
spread stretch""".split()  # the second group: verbs of RLHF-V-style long descriptions (tests/.../keyword_cases_long.py)

_ING_NOUNS = set("""building ceiling painting clothing railing awning icing frosting topping stuffing
bedding wedding evening morning ring string king wing thing spring pudding sibling dumpling
ping pong""".split())

_ADJECTIVES = set("""red green blue yellow orange purple pink brown black white gray grey silver gold golden
beige tan dark light bright pale colorful colourful multicolored striped spotted plaid checkered
large small big little tiny huge giant tall short long wide narrow thick thin round square flat
old new young elderly modern antique vintage wooden metal metallic plastic glass leather stone brick
concrete ceramic paper cardboard cotton wool furry fluffy shiny wet dry clean dirty empty full open
closed fresh ripe sliced cooked raw hot cold warm frozen sunny cloudy snowy rainy grassy sandy
busy quiet crowded cute happy sad beautiful pretty nice good great lovely fancy simple plain
left right front back top bottom middle upper lower main other same different several various
single double few many whole half entire visible clear blurry distant close nearby far
heavy lightweight soft hard smooth rough sharp delicious tasty healthy
cozy calm lush steep historic rural peaceful relaxed appetizing high low further downhill uphill thorough
ready forward backward""".split())

# Heads that name nothing one could draw a box around (the visual stop list).
NON_VISUAL = set("""image images picture pictures photo photos photograph photographs scene scenes view views
background foreground side sides left right top bottom middle center centre front back corner corners edge
edges area areas part parts portion color colors colour colours shade shades type types kind kinds sort
lot lots number numbers group groups bunch pair pairs couple set sets piece pieces variety thing things
object objects item items way ways time times day days moment moments activity activities atmosphere
setting settings detail details shape shapes size sizes style styles appearance sense feeling mood
presence question questions answer answers composition frame shot close-up closeup distance position
positions location surroundings environment lighting light shadow shadows texture pattern patterns
mix combination amount total use purpose condition state bit kind end rest row rows line lines series
display collection assortment arrangement view setting scenery landscape weather daytime nighttime
idea fact reason example impression overall focus attention perspective angle slice slices animal animals
creature creatures vehicle vehicles food foods furniture description descriptions progress herd herds flock
flocks trick tricks""".split()) - {"light"}

# Visual but rarely the key object: scene "stuff" and body parts. Their prior is scaled by `scene_weight`.
SCENE = set("""sky ground floor wall walls grass field street road sidewalk water sea ocean beach sand snow
room kitchen bathroom bedroom living park city town hill hillside mountain mountains forest tree trees
air ceiling window door building buildings fence dirt mud lake river shore wave waves cloud clouds sun
hand hands head face mouth hair eye eyes arm arms leg legs foot feet body finger fingers back
counter surface table-top night daylight distance""".split())

_MULTIWORD = tuple(sorted({w for words in SYNONYMS.values() for w in words if " " in w}, key=len, reverse=True))
_TOKEN = re.compile(r"[a-z][a-z'_\-]*|\d+(?:\.\d+)?|[.,;:!?()\"]")


@lru_cache(maxsize=1)
def _verb_forms() -> frozenset[str]:
    forms = set()
    for v in _VERBS:
        forms.add(v)
        forms.add(v + "s" if not v.endswith(("s", "sh", "ch", "x")) else v + "es")
        stem = v[:-1] if v.endswith("e") and v not in ("see",) else v
        forms.add(stem + "ing")
        forms.add(stem + "ed" if not v.endswith("e") else v + "d")
        if re.search(r"[^aeiou][aeiou][bdgmnprt]$", v):  # sit -> sitting, stop -> stopped
            forms.add(v + v[-1] + "ing")
            forms.add(v + v[-1] + "ed")
    forms |= set("""sat stood held wore worn ridden rode lay lain played ate eaten drank walked ran carried shown
    flew flown swam threw thrown caught hit swung cut made given got gone came put set hung took taken
    seen saw rose risen blew blown spread""".split())
    return frozenset(forms - {"set", "cut", "line", "top", "place", "cover"})


_IRREGULAR_SINGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "knives": "knife",
                       "mice": "mouse", "geese": "goose", "teeth": "tooth", "feet": "foot", "leaves": "leaf",
                       "shelves": "shelf", "calves": "calf", "wolves": "wolf", "loaves": "loaf", "oxen": "ox",
                       "glasses": "glass", "buses": "bus", "skis": "skis", "scissors": "scissors",
                       "species": "species", "series": "series", "clothes": "clothes", "pants": "pants",
                       "jeans": "jeans", "shorts": "shorts", "sunglasses": "sunglasses", "grass": "grass"}  # fmt: skip


def singular(word: str) -> str:
    """A plain English singular for a head noun (rule-based; irregulars listed)."""
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR_SINGULAR:
        out = _IRREGULAR_SINGULAR[last]
    elif last.endswith("ies") and len(last) > 4:
        out = last[:-3] + "y"
    elif re.search(r"(ches|shes|xes|sses|zes)$", last):
        out = last[:-2]
    elif last.endswith("oes") and len(last) > 4:
        out = last[:-2]
    elif last.endswith("s") and not re.search(r"(ss|us|is)$", last) and len(last) > 3:
        out = last[:-1]
    else:
        out = last
    return f"{head} {out}" if head else out


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation, with multi-word COCO names joined into one token."""
    text = text.lower().replace("_", " ")
    for phrase in _MULTIWORD:
        if phrase in text:
            text = re.sub(rf"\b{re.escape(phrase)}(e?s)?\b", lambda m: m.group(0).replace(" ", "_"), text)
    return [t.replace("_", " ") for t in _TOKEN.findall(text)]


@dataclass
class Candidate:
    phrase: str  # modifiers + singular head, as the keyword is returned
    head: str  # singular head
    topic: str
    positions: list[int] = field(default_factory=list)  # word index of the head in the text


def _is_stop(tok: str) -> bool:
    return tok in _FUNCTION or tok in _verb_forms() or bool(re.fullmatch(r"\d.*|[a-z]+ly", tok)) and tok not in ("fly", "lily", "belly", "jelly")


def candidates(text: str, max_modifiers: int = 2, offset: int = 0) -> list[tuple[str, str, int, bool]]:
    """(phrase, head, position, negated) of every noun phrase in `text`, left to right.

    `negated` marks a phrase right after a negation ("there is no cat", "not a dog").
    """
    tokens = tokenize(text)
    out: list[tuple[str, str, int, bool]] = []
    run: list[tuple[str, int]] = []

    def close() -> None:
        while run and (run[-1][0] in _ADJECTIVES or _participle(run[-1][0])):
            run.pop()
        if run:
            head_tok, pos = run[-1]
            head = singular(head_tok)
            mods = [t for t, _ in run[:-1]][-max_modifiers:] if max_modifiers > 0 else []
            start = run[0][1]
            before = tokens[max(0, start - 2) : start]
            negated = bool(before) and (before[-1] in _NEGATIONS or (len(before) == 2 and before[0] in _NEGATIONS
                                                                       and before[1] in ("a", "an", "the", "any")))
            out.append((" ".join([*mods, head]), head, pos + offset, negated))
        run.clear()

    prev = None
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if not tok[0].isalpha():
            close()
        elif _participle(tok):
            # a modifier after a determiner/adjective and before a noun ("a sleeping cat"), else a verb
            after_det = prev in ("a", "an", "the", "some", "two", "three") or (prev in _ADJECTIVES) or bool(run)
            before_noun = nxt is not None and nxt[0].isalpha() and not _is_stop(nxt) and not _participle(nxt)
            if after_det and before_noun and (not run or run[-1][0] in _ADJECTIVES):
                run.append((tok, i))
            else:
                close()
        elif _is_stop(tok):
            close()
        else:
            run.append((tok, i))
        prev = tok
    close()
    return out


def _participle(tok: str) -> bool:
    if tok in _ING_NOUNS:
        return False
    return (tok.endswith("ing") and len(tok) > 4) or (tok.endswith("ed") and len(tok) > 4 and tok not in ("bed", "shed", "sled"))


def topic_of(head: str) -> str:
    """Heads naming the same COCO category share a topic; other heads are their own topic."""
    return category_of(head) or head


def weighted_pagerank(weights: np.ndarray, prior: np.ndarray, alpha: float = 0.85, tol: float = 1e-10,
                      max_iter: int = 200) -> np.ndarray:
    """PageRank on a weighted undirected graph: `r = (1 - alpha) p + alpha W_norm^T r`.

    Rows of `weights` are normalised to transition probabilities; a node without edges teleports by
    `prior` (normalised to sum 1). Returns scores summing to 1.
    """
    n = len(prior)
    p = np.asarray(prior, dtype=np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    out_sum = w.sum(axis=1)
    dangling = out_sum <= 0
    trans = np.divide(w, out_sum[:, None], out=np.zeros_like(w), where=~dangling[:, None])
    r = p.copy()
    for _ in range(max_iter):
        new = (1 - alpha) * p + alpha * (trans.T @ r + r[dangling].sum() * p)
        if np.abs(new - r).sum() < tol:
            return new
        r = new
    return r


_EMBEDDERS: dict[tuple, Any] = {}


def _embedder(model_id: str, revision: str | None, device: str):
    """A mean-pooled sentence embedder (the sentence-transformers recipe) from a local path or model id."""
    key = (model_id, revision, device)
    if key not in _EMBEDDERS:
        from mfpo_data._deps import require

        require("torch", "transformers", extra="score", feature="keywords.embedding_model")
        import torch
        from transformers import AutoModel, AutoTokenizer

        with loading_model(model_id, "keywords.embedding_model"):
            tok = AutoTokenizer.from_pretrained(model_id, revision=revision)
            model = AutoModel.from_pretrained(model_id, revision=revision).to(device).eval()

        @torch.no_grad()
        def embed(texts: list[str]) -> np.ndarray:
            enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            v = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=-1).float().cpu().numpy()

        _EMBEDDERS[key] = embed
    return _EMBEDDERS[key]


class GraphKeywords(Described):
    """Rank key-object phrases of the chosen answer (and optionally the question) on a word graph."""

    backend = "graph"

    def __init__(
        self,
        include_question: bool = True,
        question_weight: float = 0.5,
        prefer_target: bool = True,
        window_phi: float = 1.0,
        position_decay: float = 0.05,
        alpha: float = 0.85,
        vocabulary_prior: float = 2.0,
        max_modifiers: int = 1,
        scene_weight: float = 0.3,
        negation_weight: float = 0.2,
        embedding_model: str | None = None,
        embedding_revision: str | None = None,
        semantic_weight: float = 0.5,
        device: str = "cpu",
    ):
        if not 0 < alpha < 1:
            raise ValueError("keywords.alpha must be in (0, 1)")
        self.include_question, self.question_weight, self.prefer_target = include_question, question_weight, prefer_target
        self.window_phi, self.position_decay, self.alpha = window_phi, position_decay, alpha
        self.vocabulary_prior, self.max_modifiers = vocabulary_prior, max_modifiers
        self.scene_weight, self.negation_weight = scene_weight, negation_weight
        self.embedding_model, self.embedding_revision = embedding_model, embedding_revision
        self.semantic_weight, self.device = semantic_weight, device

    def extract(self, samples: list[Sample]) -> list[list[str]]:
        return [self.rank(s.chosen, s.question if self.include_question else "", s.target if self.prefer_target else None)
                for s in samples]

    def rank(self, answer: str, question: str = "", target: str | None = None) -> list[str]:
        """Ranked key-object phrases of one answer, most important first."""
        cands = self._candidates(answer, question)
        ranked: list[str] = [target] if target else []
        if not cands:
            return ranked
        scores = self._scores(cands)
        best: dict[str, tuple[float, int, str]] = {}  # topic -> (score, first position, phrase)
        for c, s in zip(cands, scores, strict=True):
            first = min(c.positions)
            cur = best.get(c.topic)
            if cur is None:
                best[c.topic] = (s, first, c.phrase)
            else:  # the topic scores its best candidate; it is named by its first-seen phrase
                phrase = c.phrase if first < cur[1] else cur[2]
                best[c.topic] = (max(s, cur[0]), min(first, cur[1]), phrase)
        order = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        target_topic = topic_of(singular(target.lower())) if target else None
        ranked += [phrase for topic, (_, _, phrase) in order if topic != target_topic]
        return ranked

    def _candidates(self, answer: str, question: str) -> list[Candidate]:
        found: list[tuple[str, str, int, float]] = []  # phrase, head, position, occurrence weight
        offset = 0
        for text, weight in ((question, self.question_weight), (answer, 1.0)) if question else ((answer, 1.0),):
            for p, h, pos, negated in candidates(text, self.max_modifiers, offset=offset):
                w = weight * (self.negation_weight if negated else 1.0) * (self.scene_weight if h in SCENE else 1.0)
                found.append((p, h, pos, w))
            offset += len(tokenize(text))
        by_phrase: dict[str, Candidate] = {}
        self._weights: dict[str, list[float]] = {}
        for phrase, head, pos, w in found:
            if head in NON_VISUAL or head in _ADJECTIVES or len(head) < 2:
                continue
            c = by_phrase.setdefault(phrase, Candidate(phrase, head, topic_of(head)))
            c.positions.append(pos)
            self._weights.setdefault(phrase, []).append(w)
        return list(by_phrase.values())

    def _scores(self, cands: list[Candidate]) -> np.ndarray:
        n = len(cands)
        w = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                if cands[i].topic == cands[j].topic:
                    continue  # multipartite: no edges inside a topic
                d = np.abs(np.subtract.outer(cands[i].positions, cands[j].positions)).astype(np.float64)
                w[i, j] = w[j, i] = float((1.0 / (1.0 + d**self.window_phi)).sum())
        if self.embedding_model and n > 1:
            v = _embedder(self.embedding_model, self.embedding_revision, self.device)([c.phrase for c in cands])
            sim = np.clip(v @ v.T, 0.0, 1.0)
            same = np.array([[a.topic == b.topic for b in cands] for a in cands])
            w += self.semantic_weight * np.where(same, 0.0, sim)
        prior = np.array([
            sum(wt * np.exp(-self.position_decay * p) for wt, p in zip(self._weights[c.phrase], c.positions, strict=True))
            * (self.vocabulary_prior if category_of(c.head) else 1.0)
            for c in cands
        ])
        return weighted_pagerank(w, prior, self.alpha)

    def describe(self) -> dict[str, Any]:
        out = super().describe()  # the embedding model is reported as the backend's model
        out["model_id"], out["revision"] = out.pop("embedding_model"), out.pop("embedding_revision")
        out["semantic_weight"] = self.semantic_weight if self.embedding_model else None
        return out
