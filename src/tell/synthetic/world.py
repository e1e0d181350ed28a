"""The leverage world (version 2): synthetic data in which TELL's mechanism can be tested on a laptop CPU.

What each part stands for, in the paper's terms (its Section 2 borrows the quantization model of Michaud et
al. 2023: skills are discrete "quanta", and a rare task can borrow quanta that other data teach):

* **items**: a small vocabulary of syllables (`ka lo mi ...`). A *list* is a few items.
* **pretraining skills** (what a chat LLM knows before us): copy, reverse, sort, map (through a fixed table),
  first, last, count, drop. The **pretraining corpus** states them as plain sentences
  (`reverse ka lo mi gives mi lo ka .`), as instructions in the plain chat template (one fixed wording per
  skill), as brace records with other keys (`record { name : ka lo ; total : 2 }`: it knows the syntax, as
  Llama-2 knows JSON, but not the task's schema), and a glossary line per word so that no token is unseen.
  `tell demo` pretrains a tiny Llama-style model on it and saves an ordinary Hugging Face model dir.
* **the leverage skill** `cipher` (a second substitution table, unlike `map`'s): absent from pretraining,
  where neither its wordings nor its input/output pairs ever occur. It stands for a capability the
  pretrained model lacks and that the general instruction data supply.
* **general instruction data** (Alpaca's analog): prompt/response pairs that ask for one skill in one of
  several wordings (`Reverse the list: ka lo mi`, `Write the list backwards: ka lo mi`). The knob
  `leverage` is the share of general examples that teach `cipher` (`Encode the list: ...`, `Write the list
  in code: ...`); 0 leaves the general data with nothing to lend.
* **the placebo general set**: the general set with every example of a skill the task needs (cipher, count)
  replaced by a twin of another skill with the same list, as many prompt words and as many answer words:
  the same token count, formats and length spread, and none of the task's skills. Tell with it measures what
  more optimizer steps on instruction data do without transfer.
* **the low-resource task** (Halu-CoT-JSON's analog): `Process the list: ka lo mi` ->
  `{ result : <cipher(list)> ; size : 3 }`. Solving it needs `cipher` (taught only by general data) and
  `count` (known), combined with what only the task data show: that "process" means cipher, answered as a
  record. (Pretraining's brace records use the keys `result` and `size` among others, never as the answer to
  a request: a first version without them left the task unlearnable for every method at the study's budget,
  the one change made for learnability, see docs/study.md.) Scored by **format adherence** (the output
  matches `{ result : ITEMS ; size : N }`,
  the JSON-adherence analog) and **accuracy** (exactly right: the transfer shows here).
* **the general test set** (role general): held-out queries on the pretraining skills, in pretraining's
  wording; what they are worth after training, next to the base model's, measures forgetting.
* **the anchor**: a fixed line added to task prompts, `Structured list task.`

Guarantees (tested in tests/test_demo.py): cipher is absent from pretraining and present in the general data
at the `leverage` share; the placebo set has the general set's token count and none of the task's skills;
task test lists never occur in the task train pool; everything is a function of `WorldConfig` (the seed).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

SYLLABLES = ("ka", "lo", "mi", "nu", "pe", "ri", "su", "ta", "vo", "zu", "be", "do", "fi", "gu", "ho", "ja")
SKILLS = ("copy", "reverse", "sort", "map", "first", "last", "count", "drop")  # the pretraining skills
LEVERAGE = "cipher"                     # taught only by the general data
TASK_SKILLS = (LEVERAGE, "count")       # the skills the task needs (result, size)
ANCHOR = "Structured list task."
TASK_PROMPTS = {  # the task's wording (a knob of the world, docs/study.md): v2's bare request, or one that says
    # what it wants, as Halu-CoT-JSON's prompt describes its JSON format; neither names the cipher's wording
    "bare": "Process the list: {items}",
    "instructed": "Process the list and answer as a record of its result and its size: {items}",
}
TASK_PROMPT = TASK_PROMPTS["bare"]
FORMAT_REGEX = r"\{ result : [a-z]+( [a-z]+)* ; size : [0-9]+ \}"

# Wordings of each skill in the general data (the first is the one pretraining uses). The placebo twin of a
# cipher (count) example is a list skill (a one-item skill) wording with as many words: every cipher and count
# wording has such a twin (checked when the world is built).
PHRASES = {
    "copy": ("Repeat the list", "Copy the list", "Write the list again"),
    "reverse": ("Reverse the list", "Write the list backwards", "Give the items in reverse order"),
    "sort": ("Sort the list", "Put the list in order", "Give the items in sorted order"),
    "map": ("Translate each item of the list", "Map the list", "Give the translated list"),
    "first": ("Give the first item of the list", "Name the first item", "What comes first in the list"),
    "last": ("Give the last item of the list", "Name the last item", "What comes last in the list"),
    "count": ("Count the items of the list", "How many items are in the list"),
    "drop": ("Drop the first item of the list", "Remove the first item"),
    LEVERAGE: ("Encode the list", "Give the coded list", "Write the list in code", "Put each item into the code"),
}
TWIN_SKILLS = {LEVERAGE: ("copy", "reverse", "sort", "map"), "count": ("first", "last")}  # same answer length


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_items: int = 8            # vocabulary of list items (at most 16)
    min_len: int = 2
    max_len: int = 4
    leverage: float = 0.2       # share of general examples that teach the leverage skill (cipher)
    pretrain_sentences: int = 20000
    general_examples: int = 30000
    task_train: int = 400       # the pool task budgets draw from
    task_test: int = 256
    general_test: int = 256
    cipher_test: int = 256      # the leverage skill in the general data's wordings (control C2)
    task_prompt: str = "bare"   # a key of TASK_PROMPTS

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    # What the pretraining text and the tokenizer are a function of (`World.pretrain_text`, `vocabulary`): a base
    # model is reused across worlds that differ only in their general data, task pool or test sets.
    PRETRAINING_FIELDS = ("seed", "n_items", "min_len", "max_len", "pretrain_sentences")

    def pretraining(self) -> dict:
        return {k: getattr(self, k) for k in self.PRETRAINING_FIELDS}


def _derangement(items: list[str], rng: random.Random, avoid: dict[str, str]) -> dict[str, str]:
    """A substitution table with no fixed point that also differs from `avoid` on every item."""
    while True:
        out = items[:]
        rng.shuffle(out)
        table = dict(zip(items, out))
        if all(v != k and v != avoid.get(k) for k, v in table.items()):
            return table


class World:
    def __init__(self, cfg: WorldConfig = WorldConfig()):
        self.cfg = cfg
        rng = random.Random(f"world:{cfg.seed}")
        self.items = list(SYLLABLES[:cfg.n_items])
        self.table = _derangement(self.items, rng, {})             # the "map" skill (pretraining)
        self.code = _derangement(self.items, rng, self.table)      # the "cipher" skill (general data only)
        self.order = {w: i for i, w in enumerate(sorted(self.items, key=lambda w: rng.random()))}  # "sort"
        self._twins = {s: {len(p.split()): [(t, q) for t in TWIN_SKILLS[s] for q in PHRASES[t]
                                             if len(q.split()) == len(p.split())] for p in PHRASES[s]}
                       for s in TASK_SKILLS}
        missing = [(s, n) for s, by_len in self._twins.items() for n, twins in by_len.items() if not twins]
        if missing:
            raise ValueError(f"wordings without a placebo twin of the same length: {missing}")

    # ---- skills ----------------------------------------------------------------------------------------------

    def apply(self, skill: str, xs: list[str]) -> list[str]:
        ops = {"copy": lambda: list(xs), "reverse": lambda: xs[::-1],
               "sort": lambda: sorted(xs, key=self.order.__getitem__), "map": lambda: [self.table[x] for x in xs],
               "first": lambda: xs[:1], "last": lambda: xs[-1:], "count": lambda: [str(len(xs))],
               "drop": lambda: xs[1:], LEVERAGE: lambda: [self.code[x] for x in xs]}
        if skill not in ops:
            raise ValueError(skill)
        return ops[skill]()

    def random_list(self, rng: random.Random) -> list[str]:
        return [rng.choice(self.items) for _ in range(rng.randint(self.cfg.min_len, self.cfg.max_len))]

    @staticmethod
    def query(skill: str, xs: list[str], wording: int = 0) -> str:
        return f"{PHRASES[skill][wording]}: {' '.join(xs)}"

    # ---- the corpora -----------------------------------------------------------------------------------------

    def pretrain_text(self) -> list[str]:
        from tell.prompting import PLAIN_TURN

        rng = random.Random(f"pretrain:{self.cfg.seed}")
        out = []
        keys = ("name", "items", "value", "total", "count", "result", "size")
        for _ in range(self.cfg.pretrain_sentences):
            xs, r, s = self.random_list(rng), rng.random(), rng.choice(SKILLS)
            if r < 0.55:
                out.append(f"{s} {' '.join(xs)} gives {' '.join(self.apply(s, xs))} .")
            elif r < 0.8:  # instruction-following, in the plain template, one wording per skill
                out.append(PLAIN_TURN.format(user=self.query(s, xs)) + " ".join(self.apply(s, xs)))
            elif r < 0.9:  # brace records (keys of the task's among others; never as an answer to a request)
                k1, k2 = rng.sample(keys, 2)
                out.append(f"record {{ {k1} : {' '.join(xs)} ; {k2} : {len(xs)} }} .")
            else:
                out.append(f"the result of {s} {' '.join(xs)} is {' '.join(self.apply(s, xs))} and the size of "
                           f"{' '.join(xs)} is {len(xs)} .")
        out += [f"the word {w} is a word ." for w in self.vocabulary(pretraining=False) for _ in range(3)]
        rng.shuffle(out)
        return out

    def _general_rows(self) -> list[tuple[str, int, list[str]]]:
        """(skill, wording, list) of each general example, in order."""
        rng = random.Random(f"general:{self.cfg.seed}")
        rows, seen = [], set()
        while len(rows) < self.cfg.general_examples:  # no repeated example (a sweep de-duplicates them anyway)
            xs = self.random_list(rng)
            skill = LEVERAGE if rng.random() < self.cfg.leverage else rng.choice(SKILLS)
            row = (skill, rng.randrange(len(PHRASES[skill])), xs)
            if (row[0], row[1], tuple(xs)) not in seen:
                seen.add((row[0], row[1], tuple(xs)))
                rows.append(row)
        return rows

    def _example(self, skill: str, wording: int, xs: list[str], i: int) -> dict:
        return {"prompt": self.query(skill, xs, wording), "response": " ".join(self.apply(skill, xs)),
                "id": f"g{i}", "skill": skill}

    def general(self) -> list[dict]:
        return [self._example(s, w, xs, i) for i, (s, w, xs) in enumerate(self._general_rows())]

    def placebo(self) -> list[dict]:
        """The general set with each example of a task skill replaced by a same-length twin of another skill."""
        rng = random.Random(f"placebo:{self.cfg.seed}")
        out = []
        for i, (s, w, xs) in enumerate(self._general_rows()):
            if s in TASK_SKILLS:
                twin, phrase = rng.choice(self._twins[s][len(PHRASES[s][w].split())])
                s, w = twin, PHRASES[twin].index(phrase)
            out.append(self._example(s, w, xs, i))
        return out

    def general_test(self, n: int) -> list[dict]:
        """Held-out queries on the pretraining skills, in the wording pretraining used (role general): what the
        base model can do, so that what they are worth after training measures forgetting. Exact match of the
        first line (kind cloze); no prompt
        repeats one of the general training data."""
        rng = random.Random(f"general-test:{self.cfg.seed}")
        seen = {r["prompt"] for r in self.general()}
        out = []
        while len(out) < n:
            xs, skill = self.random_list(rng), rng.choice(SKILLS)
            prompt = self.query(skill, xs)
            if prompt in seen:
                continue
            seen.add(prompt)
            answer = " ".join(self.apply(skill, xs))
            out.append({"prompt": prompt, "response": answer, "source": "task", "origin": "world-general",
                        "row": len(out), "meta": {"kind": "cloze", "role": "general", "answer": answer,
                                                  "skill": skill}})
        return out

    def cipher_test(self, n: int) -> list[dict]:
        """Held-out requests for the leverage skill in the general data's wordings (role general): what the general
        data alone teach (control C2). No prompt repeats one of the general training data."""
        rng = random.Random(f"cipher-test:{self.cfg.seed}")
        seen = {r["prompt"] for r in self.general()}
        out = []
        for _ in range(100 * n):
            if len(out) == n:
                break
            xs = self.random_list(rng)
            prompt = self.query(LEVERAGE, xs, rng.randrange(len(PHRASES[LEVERAGE])))
            if prompt in seen:
                continue
            seen.add(prompt)
            answer = " ".join(self.apply(LEVERAGE, xs))
            out.append({"prompt": prompt, "response": answer, "source": "task", "origin": "world-cipher",
                        "row": len(out), "meta": {"kind": "cloze", "role": "general", "answer": answer}})
        return out

    @property
    def task_prompt(self) -> str:
        return TASK_PROMPTS[self.cfg.task_prompt]

    def task_answer(self, xs: list[str]) -> str:
        return f"{{ result : {' '.join(self.apply(LEVERAGE, xs))} ; size : {len(xs)} }}"

    def task(self, split: str) -> list[dict]:
        n = self.cfg.task_train if split == "train" else self.cfg.task_test
        rng = random.Random(f"task:{split}:{self.cfg.seed}")
        seen = set()
        if split == "test":  # test lists never appear in the train pool
            seen = {tuple(r["prompt"].rsplit(": ", 1)[1].split()) for r in self.task("train")}
        out = []
        while len(out) < n:
            xs = self.random_list(rng)
            if tuple(xs) in seen:
                continue
            seen.add(tuple(xs))
            row = {"prompt": self.task_prompt.format(items=" ".join(xs)), "response": self.task_answer(xs)}
            if split == "test":
                row.update(source="task", origin="world", row=len(out),
                           meta={"kind": "format", "role": "task", "format_regex": FORMAT_REGEX,
                                 "answer": row["response"]})
            out.append(row)
        return out

    def vocabulary(self, pretraining: bool = True) -> list[str]:
        from tell.prompting import PLAIN_TURN

        words = set(PLAIN_TURN.format(user="").split() + ["record", "name", "items", "value", "total", "the",
                                                          "word", "is", "a", "of", "and", "size", "result"])
        if pretraining:
            words.update(w for t in self.pretrain_text()[:3000] for w in t.split())
        words.update(w for p in PHRASES.values() for q in p for w in f"{q}:".split())
        words.update(w for t in TASK_PROMPTS.values() for w in t.replace("{items}", "").split())
        words.update(ANCHOR.split())
        words.update(self.items + [str(n) for n in range(10)] + ["{", "}", ";", ":", "gives", ".", "then"])
        return sorted(words)

    def write(self, folder: Path) -> dict[str, Path]:
        """The world's files: task train pool, task test set (eval), general data, placebo general data,
        general test set (eval, forgetting), pretraining text."""
        from tell.io import atomic_open

        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, rows in (("task_train", self.task("train")), ("task_test", self.task("test")),
                           ("general", self.general()), ("placebo", self.placebo()),
                           ("general_test", self.general_test(self.cfg.general_test)),
                           ("cipher_test", self.cipher_test(self.cfg.cipher_test))):
            paths[name] = folder / f"{name}.jsonl"
            with atomic_open(paths[name]) as f:
                for r in rows:  # a general example's skill is for tests and readers, not a field to train on
                    f.write(json.dumps({k: v for k, v in r.items() if k not in ("skill", "id")}) + "\n")
        paths["pretrain"] = folder / "pretrain.txt"
        with atomic_open(paths["pretrain"]) as f:
            f.write("\n".join(self.pretrain_text()) + "\n")
        with atomic_open(folder / "world.json") as f:
            f.write(json.dumps(asdict(self.cfg) | {"anchor": ANCHOR, "table": self.table, "code": self.code},
                               indent=2))
        return paths
