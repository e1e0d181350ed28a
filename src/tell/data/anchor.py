"""The anchor prompt: a fixed text added exactly once to every task record (never to general data).

It gives task inputs a consistent feature so the model can tell them apart from general data (paper
Sec. 3.2). Where it goes is part of the method and is recorded in the manifest, because evaluation must
apply the same anchor, the same way, at inference (`Anchor.apply` is used by both).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tell.data.records import Record
from tell.errors import TellError

PLACEMENTS = ("prefix", "suffix", "system", "template")


@dataclass(frozen=True)
class Anchor:
    text: str
    placement: str = "prefix"   # prefix | suffix of the user turn, system message, or template
    separator: str = "\n"       # between anchor and prompt (prefix/suffix) or anchor and system text

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise TellError(f"unknown anchor placement '{self.placement}'; expected one of {list(PLACEMENTS)}",
                            field="anchor_placement")
        from tell.data.formats import shows_nothing

        if what := shows_nothing(self.text):  # zero-width characters only are as empty as '': nothing marks the task
            raise TellError(f"the anchor text {what}; give --anchor TEXT, --anchor-file, or --no-anchor",
                            field="anchor")
        if self.placement == "template" and self.text.count("{prompt}") != 1:
            raise TellError("a template anchor must contain the placeholder {prompt} exactly once",
                            field="anchor")

    def apply(self, rec: Record) -> Record:
        """A copy of `rec` with the anchor placed once. Applying twice is a bug, so it is refused."""
        if rec.anchored:
            raise ValueError(f"record {rec.origin}:{rec.row} is already anchored")
        if self.placement == "system":
            system = f"{self.text}{self.separator}{rec.system}" if rec.system else self.text
            out = replace(rec, system=system)
        else:
            out = replace(rec, prompt=self.place(rec.prompt))
        out.anchored = True
        out.tokens = None
        return out

    def place(self, prompt: str) -> str:
        """A user prompt with the anchor placed (prefix, suffix, template); a `system` anchor leaves it as is."""
        if self.placement == "prefix":
            return f"{self.text}{self.separator}{prompt}"
        if self.placement == "suffix":
            return f"{prompt}{self.separator}{self.text}"
        if self.placement == "template":
            # str.replace, not str.format: prompts often hold braces of their own (JSON, code).
            return self.text.replace("{prompt}", prompt)
        return prompt

    def remove(self, rec: Record) -> Record:
        """The inverse of `apply`: a copy of an anchored record without its anchor."""
        if not rec.anchored:
            return rec
        if self.placement == "system":
            system = rec.system[len(self.text):] if rec.system.startswith(self.text) else rec.system
            out = replace(rec, system=system[len(self.separator):] if system.startswith(self.separator) else system)
        else:
            out = replace(rec, prompt=self.strip(rec.prompt))
        out.anchored = False
        out.tokens = None
        return out

    def strip(self, text: str) -> str:
        """Remove the anchor from a prompt (for anchor-insensitive comparisons)."""
        if self.placement == "template":
            head, _, tail = self.text.partition("{prompt}")
            if text.startswith(head) and text.endswith(tail):
                return text[len(head):len(text) - len(tail)]
            return text
        head, tail = f"{self.text}{self.separator}", f"{self.separator}{self.text}"
        if self.placement == "prefix" and text.startswith(head):
            return text[len(head):]
        if self.placement == "suffix" and text.endswith(tail):
            return text[:-len(tail)]
        return text.replace(self.text, "")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> "Anchor | None":
        """Inverse of `to_json`, tolerant of the extra keys a manifest adds (`applied_to`); None stays None."""
        if not d:
            return None
        try:
            return cls(d["text"], d.get("placement", "prefix"), d.get("separator", "\n"))
        except (KeyError, TypeError) as e:
            raise TellError(f"a recorded anchor is malformed ({type(e).__name__}: {e}); expected text, placement "
                            "and separator", field="anchor") from e


def anchor_from_options(text: str | None, file: str | None, placement: str, separator: str,
                        no_anchor: bool) -> Anchor | None:
    """Resolve the anchor flags: exactly one of TEXT, FILE or --no-anchor (none given: no anchor)."""
    given = [name for name, v in (("--anchor", text), ("--anchor-file", file)) if v is not None]
    if no_anchor and given:
        raise TellError(f"--no-anchor contradicts {given[0]}; give one of them")
    if len(given) > 1:
        raise TellError("give --anchor TEXT or --anchor-file FILE, not both")
    if file is not None:
        p = Path(file)
        if not p.is_file():
            from tell.io import not_a_file

            raise TellError(f"{not_a_file(p)}; expected a text file", file=file, field="anchor_file")
        try:
            text = p.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as e:
            raise TellError(f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the file "
                            "as UTF-8", file=file, field="anchor_file") from None
        if not text:
            raise TellError("the anchor file is empty; expected the anchor text", file=file)
    if no_anchor or text is None:
        return None  # an empty --anchor '' is refused by Anchor below, never read as "no anchor"
    return Anchor(text=text, placement=placement, separator=separator)


def random_anchor(tok, anchor: Anchor, seed: int) -> dict:
    """The control for the anchor (the probe's random prefix, the sweep's tell-random-anchor): random words of the model's vocabulary (a seeded draw, none of the anchor's
    own words) whose text is as many tokens as the anchor's, placed where the anchor goes. Separation that this
    prefix brings too comes from having a prefix at all, not from what the anchor says."""
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    anchor_text = anchor.text.replace("{prompt}", " ").strip()
    n = count(anchor_text)
    own = {w.strip(".,:;!?\"'").lower() for w in anchor_text.split()}
    special = set(getattr(tok, "all_special_tokens", []))
    words = sorted({w for w in (t.lstrip("▁Ġ") for t in tok.get_vocab() if t not in special)
                    if len(w) >= 3 and w.isascii() and w.isalpha() and w.lower() not in own})
    if not words:
        raise TellError("the tokenizer's vocabulary has no plain words to draw a random prefix from; "
                        "use --no-random-prefix")
    rng, text = random.Random(f"{seed}:random-prefix"), ""
    while count(text) < n:
        text = f"{text} {rng.choice(words)}".strip()
    if count(text) > n:  # the last word took more than one token: keep the first n tokens
        text = tok.decode(tok(text, add_special_tokens=False)["input_ids"][:n]).strip()
    placement = "prefix" if anchor.placement == "template" else anchor.placement
    return {"text": text, "tokens": count(text), "anchor_tokens": n, "placement": placement, "seed": seed,
            "anchor": Anchor(text, placement, anchor.separator)}
