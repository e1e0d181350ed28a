"""The leverage world: synthetic data in which the paper's claims can be measured on a laptop CPU.

What each part stands for (in the spirit of the multitask sparse parity of Michaud et al. 2023, the
quantization model the paper builds on):

* **items**: a small vocabulary of syllables (`ka lo mi ...`). A *list* is 3-6 items.
* **skills** ("quanta"): simple operations on a list: copy, reverse, sort, map (through a fixed table),
  first, last, count, drop the first item, and compositions of two of them ("reverse then map").
* **pretraining corpus** (what a chat LLM saw before us): plain sentences that apply the skills,
  `reverse ka lo mi gives mi lo ka .`; some instruction-formatted requests in the plain template (the
  base is a "chat" model, as in the paper); brace records with *other* keys, `{ name : ka lo ; total : 2 }`
  (it knows the syntax, as Llama-2 knows JSON, but not the task's schema); sentences that use "result"
  and "size"; and a glossary line per word, so that no token is unseen. `tell demo` pretrains a tiny
  Llama-style model on it and saves an ordinary Hugging Face model dir.
* **general instruction data** (Alpaca's analog): prompt/response pairs that ask for one skill, or a
  composition, in words: `Reverse the list: ka lo mi` -> `mi lo ka`.
* **the low-resource task** (Halu-CoT-JSON's analog): `Process the list: ka lo mi` ->
  `{ result : <sort(list)> ; size : 3 }`. Solving it needs skills general data supply (sort, count) plus
  two things only the task data show: that "process" means sort (in the world's own item order), and the
  structured output format. (A first version used `map`, which the 2-minute base model knows too poorly
  for any method to get the content right within the demo's budgets; `sort` it knows well.) Scored by **format adherence** (the output matches
  `{ result : ITEMS ; size : N }`, the JSON-adherence analog) and **accuracy** (exactly right).
* **the anchor**: a fixed line added to task prompts, `Structured list task.`

Knobs (`WorldConfig`): number of items, list lengths, how much the task shares with general data
(`share`: the fraction of general examples that are task queries answered plainly, without the task's
format; 0 = none), and the corpus sizes. `TASK_COMPOSITION` names the task's operation.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

SYLLABLES = ("ka", "lo", "mi", "nu", "pe", "ri", "su", "ta", "vo", "zu", "be", "do", "fi", "gu", "ho", "ja")
SKILLS = ("copy", "reverse", "sort", "map", "first", "last", "count", "drop")
TASK_COMPOSITION = ("sort",)  # the task's operation (one skill or a composition of two)
ANCHOR = "Structured list task."
TASK_PROMPT = "Process the list: {items}"
FORMAT_REGEX = r"\{ result : [a-z]+( [a-z]+)* ; size : [0-9]+ \}"

PHRASES = {
    "copy": "Repeat the list: {items}", "reverse": "Reverse the list: {items}", "sort": "Sort the list: {items}",
    "map": "Translate each item of the list: {items}", "first": "Give the first item of the list: {items}",
    "last": "Give the last item of the list: {items}", "count": "Count the items of the list: {items}",
    "drop": "Drop the first item of the list: {items}",
}


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_items: int = 12           # vocabulary of list items (at most 16)
    min_len: int = 3
    max_len: int = 6
    share: float = 0.0          # share of general examples that ask for the task's composition in words
    pretrain_sentences: int = 30000
    general_examples: int = 6000
    task_train: int = 400       # the pool task budgets draw from
    task_test: int = 64

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class World:
    def __init__(self, cfg: WorldConfig = WorldConfig()):
        self.cfg = cfg
        rng = random.Random(f"world:{cfg.seed}")
        self.items = list(SYLLABLES[:cfg.n_items])
        shuffled = self.items[:]
        rng.shuffle(shuffled)
        self.table = dict(zip(self.items, shuffled))  # the "map" skill
        self.order = {w: i for i, w in enumerate(sorted(self.items, key=lambda w: rng.random()))}  # "sort"

    # ---- skills ----------------------------------------------------------------------------------------------

    def apply(self, skill: str, xs: list[str]) -> list[str]:
        if skill == "copy":
            return list(xs)
        if skill == "reverse":
            return xs[::-1]
        if skill == "sort":
            return sorted(xs, key=self.order.__getitem__)
        if skill == "map":
            return [self.table[x] for x in xs]
        if skill == "first":
            return xs[:1]
        if skill == "last":
            return xs[-1:]
        if skill == "count":
            return [str(len(xs))]
        if skill == "drop":
            return xs[1:]
        raise ValueError(skill)

    def compose(self, skills: tuple[str, ...], xs: list[str]) -> list[str]:
        for s in skills:
            xs = self.apply(s, xs)
        return xs

    def random_list(self, rng: random.Random) -> list[str]:
        return [rng.choice(self.items) for _ in range(rng.randint(self.cfg.min_len, self.cfg.max_len))]

    def _pairs(self) -> list[tuple[str, str]]:
        """Two-skill compositions that general data use (never the task's own, unless `share` > 0)."""
        list_skills = ("copy", "reverse", "sort", "map", "drop")
        return [(a, b) for a in list_skills for b in list_skills if a != b and (a, b) != TASK_COMPOSITION]

    def _all_pairs(self) -> list[tuple[str, ...]]:
        return self._pairs() + ([TASK_COMPOSITION] if len(TASK_COMPOSITION) == 2 else [])

    # ---- the corpora -----------------------------------------------------------------------------------------

    def pretrain_text(self) -> list[str]:
        from tell.prompting import PLAIN_TURN

        rng = random.Random(f"pretrain:{self.cfg.seed}")
        out, pairs = [], self._all_pairs()  # the base model has seen every composition
        keys = ("name", "items", "value", "total", "count")
        for _ in range(self.cfg.pretrain_sentences):
            xs, r = self.random_list(rng), rng.random()
            if r < 0.45:
                s = rng.choice(SKILLS)
                out.append(f"{s} {' '.join(xs)} gives {' '.join(self.apply(s, xs))} .")
            elif r < 0.65:
                a, b = rng.choice(pairs)
                out.append(f"{a} then {b} {' '.join(xs)} gives {' '.join(self.compose((a, b), xs))} .")
            elif r < 0.8:  # instruction-following, in the plain template, on single skills
                s = rng.choice(SKILLS)
                out.append(PLAIN_TURN.format(user=PHRASES[s].format(items=" ".join(xs))) + " ".join(self.apply(s, xs)))
            elif r < 0.9:  # brace records with other keys
                k1, k2 = rng.sample(keys, 2)
                out.append(f"record {{ {k1} : {' '.join(xs)} ; {k2} : {len(xs)} }} .")
            else:
                s = rng.choice(SKILLS)
                out.append(f"the result of {s} {' '.join(xs)} is {' '.join(self.apply(s, xs))} and the size of "
                           f"{' '.join(xs)} is {len(xs)} .")
        out += [f"the word {w} is a word ." for w in self.vocabulary(pretraining=False) for _ in range(3)]
        rng.shuffle(out)
        return out

    def general(self) -> list[dict]:
        rng = random.Random(f"general:{self.cfg.seed}")
        out, pairs = [], self._pairs()
        for i in range(self.cfg.general_examples):
            xs = self.random_list(rng)
            items = " ".join(xs)
            r = rng.random()
            if r < self.cfg.share:  # the task's query, answered plainly (no format): what the task shares
                out.append({"prompt": TASK_PROMPT.format(items=items),
                            "response": " ".join(self.compose(TASK_COMPOSITION, xs)), "id": f"g{i}"})
                continue
            if r < 0.7:
                skills = (rng.choice(SKILLS),)
            else:
                skills = rng.choice(pairs)
            if len(skills) == 1:
                prompt = PHRASES[skills[0]].format(items=items)
            else:
                prompt = f"{PHRASES[skills[0]].split(' the list')[0]} the list, then {skills[1]} it: {items}"
            out.append({"prompt": prompt, "response": " ".join(self.compose(skills, xs)), "id": f"g{i}"})
        return out

    def general_test(self, n: int) -> list[dict]:
        """Held-out single-skill general queries (role general): what the general skills are worth after
        training, i.e. forgetting. Scored by exact match of the first line (kind cloze); no prompt repeats
        one of the general training data."""
        rng = random.Random(f"general-test:{self.cfg.seed}")
        seen = {r["prompt"] for r in self.general()}
        out = []
        while len(out) < n:
            xs, skill = self.random_list(rng), rng.choice(SKILLS)
            prompt = PHRASES[skill].format(items=" ".join(xs))
            if prompt in seen:
                continue
            seen.add(prompt)
            answer = " ".join(self.compose((skill,), xs))
            out.append({"prompt": prompt, "response": answer, "source": "task", "origin": "world-general",
                        "row": len(out), "meta": {"kind": "cloze", "role": "general", "answer": answer}})
        return out

    def task_answer(self, xs: list[str]) -> str:
        return f"{{ result : {' '.join(self.compose(TASK_COMPOSITION, xs))} ; size : {len(xs)} }}"

    def task(self, split: str) -> list[dict]:
        n = self.cfg.task_train if split == "train" else self.cfg.task_test
        rng = random.Random(f"task:{split}:{self.cfg.seed}")
        seen = set()
        if split == "test":  # test lists never appear in the train pool
            seen = {tuple(r["prompt"].split(": ", 1)[1].split()) for r in self.task("train")}
        out = []
        while len(out) < n:
            xs = self.random_list(rng)
            if tuple(xs) in seen:
                continue
            seen.add(tuple(xs))
            row = {"prompt": TASK_PROMPT.format(items=" ".join(xs)), "response": self.task_answer(xs)}
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
        texts = (self.pretrain_text()[:3000] if pretraining else []) + \
            [r["prompt"] + " " + r["response"] for r in self.general()[:2000]]
        texts += [r["prompt"] + " " + r["response"] + " " + ANCHOR for r in self.task("train")[:50]]
        texts += list(PHRASES.values()) + [f"{a} then {b}" for a in SKILLS for b in SKILLS]
        for t in texts:
            words.update(t.replace("{items}", "").split())
        words.update(self.items + [str(n) for n in range(10)] + ["{", "}", ";", ":", "result", "size"])
        return sorted(words)

    def write(self, folder: Path) -> dict[str, Path]:
        """The world's files: task train pool, task test set (eval), general data, general test set (eval,
        forgetting), pretraining text."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, rows in (("task_train", self.task("train")), ("task_test", self.task("test")),
                           ("general", self.general()), ("general_test", self.general_test(self.cfg.task_test))):
            paths[name] = folder / f"{name}.jsonl"
            with open(paths[name], "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        paths["pretrain"] = folder / "pretrain.txt"
        paths["pretrain"].write_text("\n".join(self.pretrain_text()) + "\n", encoding="utf-8")
        (folder / "world.json").write_text(json.dumps(asdict(self.cfg) | {"anchor": ANCHOR,
                                                                          "table": self.table}, indent=2))
        return paths
