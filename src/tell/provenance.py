"""What produced an output: package versions, so results files describe themselves."""

from __future__ import annotations

import importlib.metadata
import platform

import tell

_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "tokenizers", "sentencepiece",
             "accelerate", "numpy", "pyarrow", "sacrebleu", "scikit-learn", "gguf")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "tell": tell.__version__}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
