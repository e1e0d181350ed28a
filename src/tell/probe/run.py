"""`probe`: hidden states of general inputs, task inputs without the anchor and with it (and with a second
anchor), their separation at the chosen layers, and t-SNE / PCA plots side by side."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

from tell import provenance
from tell.config import to_dict
from tell.probe.config import ProbeConfig
from tell.data.anchor import Anchor, random_anchor
from tell.data.loading import load_records
from tell.artifacts import MixtureDir, RunDir
from tell.data.records import GENERAL, TASK, Record
from tell.errors import TellError
from tell.io import atomic_open, expect_folder, staged_output, write_json
from tell.models import gguf_provenance, load_for_inference
from tell.probe.capture import embed, resolve_layers
from tell.probe.separation import separation

OUTPUTS = ("tsne_layer*.png", "pca_layer*.png", "separation_by_layer.png", "probe.json")  # what a probe writes


def _records(spec: str, source: str) -> tuple[list[Record], MixtureDir | None]:
    """Records of one source from a file or a `prepare` folder (un-anchored: the anchor is placed here)."""
    if Path(spec).is_dir():
        mix = MixtureDir(spec)
        if not mix.exists():
            raise TellError("is a folder without manifest.json; expected a `tell prepare` folder or a records file",
                            file=spec)
        mix.verify()
        return mix.source_records(source, unanchored=True), mix
    return load_records(spec, source=source, progress=False).records, None


def _choose(recs: list[Record], n: int, seed: int, label: str) -> list[Record]:
    if len(recs) < 2:
        raise TellError(f"the {label} group needs at least 2 examples, got {len(recs)}")
    return random.Random(f"{seed}:{label}").sample(recs, min(n, len(recs)))


def group_vectors(model, tok, groups: dict[str, list[Record]], layers, pooling) -> dict[str, dict[int, np.ndarray]]:
    return {name: {k: v.numpy() for k, v in embed(model, tok, recs, layers, pooling=pooling).items()}
            for name, recs in groups.items()}


def plot(vecs: dict[str, np.ndarray], anchors: list[str], path: Path, method: str, seed: int) -> None:
    """General vs task, one panel per condition (no anchor, anchor[, anchor 2]); one projection for all."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    names = ["general", "task"] + anchors
    x = np.concatenate([vecs[n] for n in names])
    if method == "pca":
        z = PCA(n_components=2, random_state=seed).fit_transform(x)
    else:
        z = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), random_state=seed,
                 init="pca").fit_transform(x)
    parts, at = {}, 0
    for n in names:
        parts[n] = z[at:at + len(vecs[n])]
        at += len(vecs[n])
    fig, axes = plt.subplots(1, 1 + len(anchors), figsize=(5 * (1 + len(anchors)), 4.4), squeeze=False)
    for ax, cond in zip(axes[0], ["task"] + anchors):
        ax.scatter(*parts["general"].T, s=12, c="#1f77b4", label="general", alpha=0.7)
        ax.scatter(*parts[cond].T, s=12, c="#d62728", label=cond.replace("task", "task", 1), alpha=0.7)
        ax.set_title({"task": "without anchor", "task+anchor": "with anchor", "task+anchor2": "with anchor 2",
                      "task+random": "with a random prefix"}[cond])
        ax.legend(fontsize=8)
    fig.suptitle(f"{method.upper()} of layer hidden states: task vs general")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def _anchor(cfg: ProbeConfig, mix: MixtureDir | None) -> Anchor:
    """--anchor (placed as --anchor-placement) > the prepare folder's anchor > the run's anchor."""
    recorded = mix.anchor() if mix else None
    if recorded is None and cfg.adapter:
        recorded = RunDir(cfg.adapter).anchor()
    text = cfg.anchor or (recorded.text if recorded else None)
    if not text:
        raise TellError("no anchor: give --anchor TEXT (or a prepare folder / run whose manifest has one)")
    placement = cfg.anchor_placement or (recorded.placement if recorded else "prefix")
    return Anchor(text, placement, recorded.separator if recorded else "\n")


def probe(cfg: ProbeConfig) -> dict:
    if not (cfg.model and cfg.task and cfg.out):
        raise TellError("expected --model, --task and --out")
    expect_folder(cfg.out)  # before the model runs
    task, mix = _records(cfg.task, TASK)
    general_spec = cfg.general or (cfg.task if mix else None)
    if not general_spec:
        raise TellError("no general records; expected --general FILE_OR_DIR", field="general")
    general, _ = _records(general_spec, GENERAL)
    anchor = _anchor(cfg, mix)
    n = min(cfg.examples, len(task), len(general))  # equal groups: a probe of 2 vs 50 scores 0.96 by the majority
    if n < cfg.examples and len(task) != len(general):
        small = "task" if len(task) < len(general) else "general"
        print(f"tell: warning: the {small} group has {n} example(s), fewer than --examples {cfg.examples}: both "
              f"groups use {n}, so that a probe's chance level stays 0.5", file=sys.stderr)
    task, general = _choose(task, n, cfg.seed, "task"), _choose(general, n, cfg.seed, "general")
    groups = {"general": general, "task": task, "task+anchor": [anchor.apply(r) for r in task]}
    if cfg.anchor2:
        groups["task+anchor2"] = [Anchor(cfg.anchor2, anchor.placement, anchor.separator).apply(r) for r in task]
    model, tok = load_for_inference(cfg.model, cfg.adapter, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    control = random_anchor(tok, anchor, cfg.seed) if cfg.random_prefix else None
    if control:
        prefix = control.pop("anchor")
        groups["task+random"] = [prefix.apply(r) for r in task]
    layers = resolve_layers(model, cfg.layers)
    vecs = group_vectors(model, tok, groups, layers, cfg.pooling)
    conds = [g for g in groups if g.startswith("task")]
    middle = resolve_layers(model, "middle")[0]
    main_layer = middle if middle in layers else layers[0]  # plots, bootstrap and gains use this layer
    result = {"layers": {}, "main_layer": main_layer}
    for k in layers:
        boot = cfg.bootstrap if k == main_layer else 0
        result["layers"][k] = {c: separation(vecs[c][k], vecs["general"][k], bootstrap=boot, seed=cfg.seed)
                               for c in conds}
    doc = {"kind": "tell-probe", "settings": to_dict(cfg), "anchor": anchor.to_json(), "anchor2": cfg.anchor2,
           "groups": {g: len(v) for g, v in groups.items()}, "num_layers": len(result["layers"]),
           "gain": {c: {m: result["layers"][main_layer][c][m]["value"] - result["layers"][main_layer]["task"][m]["value"]
                        for m in ("silhouette", "centroid_cosine_distance", "probe_accuracy")} for c in conds[1:]},
           "random_prefix": control,
           "intervals": "95% percentile bootstrap at the main layer, examples resampled within each group; an example's "
                        "copies in a resample are not its neighbours (silhouette) and stay in one probe fold "
                        "(tell.probe.separation)",
           **result, "base_gguf": gguf_provenance(cfg.model), "packages": provenance.package_versions()}
    if control:  # what the anchor adds over any prefix of its length
        doc["anchor_over_random"] = {m: result["layers"][main_layer]["task+anchor"][m]["value"]
                                     - result["layers"][main_layer]["task+random"][m]["value"]
                                     for m in ("silhouette", "centroid_cosine_distance", "probe_accuracy")}
    # written in a staging folder and moved in whole, probe.json last: a probe that fails keeps the last one's
    # files, and one that succeeds drops the plots of an earlier probe at other layers
    with staged_output(cfg.out, replaces=OUTPUTS, last=("probe.json",)) as out:
        for method in ("tsne", "pca"):
            plot({g: vecs[g][main_layer] for g in groups}, conds[1:], out / f"{method}_layer{main_layer}.png",
                 method, cfg.seed)
        if len(layers) > 1:
            _curve(result, conds, out / "separation_by_layer.png")
        write_json(out / "probe.json", doc)
    return doc


def _curve(result: dict, conds: list[str], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(result["layers"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, metric in zip(axes, ("silhouette", "centroid_cosine_distance", "probe_accuracy")):
        for c in conds:
            ax.plot(layers, [result["layers"][k][c][metric]["value"] for k in layers], marker="o", label=c)
        ax.set_xlabel("layer")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
