"""`tell probe` and `tell anchor generate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tell.cli import main
from tell.data.records import Record
from tell.experiments.anchor_gen import clean, rank
from tell.probe.capture import decoder_layers, hooked, resolve_layers
from tell.probe.separation import separation

from conftest import write_jsonl


def _all_hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_even_after_errors(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with hooked(model, [1, 2]) as store:
        model(torch.tensor([[1, 5, 6]]))
        assert _all_hooks(model) == 2
    assert _all_hooks(model) == 0 and store[1][0].shape == (1, 3, 32)
    with pytest.raises(RuntimeError, match="boom"):
        with hooked(model, [1]):
            raise RuntimeError("boom")
    assert _all_hooks(model) == 0


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma"])
def test_layer_indexing_for_model_families(family):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = AutoModelForCausalLM.from_config(cfg)
    layers = decoder_layers(model)
    assert len(layers) == 6
    assert resolve_layers(model, "middle") == [3] and resolve_layers(model, "all") == [1, 2, 3, 4, 5, 6]
    assert resolve_layers(model, "2,5") == [2, 5]
    with pytest.raises(Exception, match="out of range"):
        resolve_layers(model, "7")
    before = _all_hooks(model)  # transformers may keep hooks of its own for output_hidden_states
    with hooked(model, [6]) as store:
        model(torch.tensor([[1, 2, 3, 4]]))
    assert store[6][0].shape == (1, 4, 32) and _all_hooks(model) == before
    # Layer k's hook sees what the model reports as hidden_states[k].
    with hooked(model, [3]) as store:
        out = model(torch.tensor([[1, 2, 3, 4]]), output_hidden_states=True)
    assert torch.allclose(store[3][0], out.hidden_states[3], atol=1e-5)


def test_separation_on_synthetic_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (40, 16)) + 8 * np.eye(16)[0]
    b = rng.normal(0, 1, (40, 16)) - 8 * np.eye(16)[0]
    far = separation(a, b, bootstrap=30)
    assert far["silhouette"]["value"] > 0.5 and far["probe_accuracy"]["value"] == 1.0
    assert far["centroid_cosine_distance"]["value"] > 1.5  # opposite directions: cosine near -1
    same = separation(rng.normal(0, 1, (40, 16)) + 3, rng.normal(0, 1, (40, 16)) + 3, bootstrap=30)
    assert abs(same["silhouette"]["value"]) < 0.05 and same["probe_accuracy"]["value"] < 0.75
    assert same["centroid_cosine_distance"]["value"] < 0.05
    lo, hi = far["probe_accuracy"]["ci95"]
    assert lo <= hi


def test_probe_cli_writes_numbers_and_plots(tmp_path, tiny_model, toy_mixture, capsys):
    out = tmp_path / "probe"
    assert main(["probe", "--model", str(tiny_model), "--task", str(toy_mixture), "--examples", "20",
                 "--anchor2", "judge json answer", "--layers", "all", "--bootstrap", "20", "--out", str(out)]) == 0
    doc = json.loads((out / "probe.json").read_text())
    assert doc["anchor"]["text"] == "task" and doc["groups"] == {"general": 20, "task": 20, "task+anchor": 20,
                                                                 "task+anchor2": 20, "task+random": 20}
    assert set(doc["layers"]) == {"1", "2"} and "silhouette" in doc["layers"]["1"]["task+anchor"]
    assert set(doc["gain"]) == {"task+anchor", "task+anchor2", "task+random"}
    for name in ("tsne_layer1.png", "pca_layer1.png", "separation_by_layer.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "task+anchor vs general" in capsys.readouterr().out


def test_random_prefix_control_has_the_anchors_token_length_and_is_seeded(tmp_path, tiny_model, toy_mixture,
                                                                          llama2_tokenizer, capsys):
    """Separation that any prefix causes must not be credited to the anchor: by default the probe also places a
    random prefix of the anchor's token length (random vocabulary words, seeded) and reports the anchor over it."""
    from tell.data.anchor import Anchor
    from tell.data.anchor import random_anchor as random_prefix

    _, tok = llama2_tokenizer
    anchor = Anchor("The following is a hallucination-detection task; answer in the required JSON format.")
    n = len(tok(anchor.text, add_special_tokens=False)["input_ids"])
    a, b, c = (random_prefix(tok, anchor, seed) for seed in (1, 1, 2))
    assert a["text"] == b["text"] != c["text"] and a["tokens"] == a["anchor_tokens"] == n
    assert not {w.lower() for w in a["text"].split()} & {"following", "hallucination", "task", "answer", "json"}
    r = a["anchor"].apply(Record(prompt="Is this right?", response="no"))
    assert r.prompt == a["text"] + "\nIs this right?"  # placed where the anchor goes
    out = tmp_path / "probe"
    assert main(["probe", "--model", str(tiny_model), "--task", str(toy_mixture), "--examples", "12",
                 "--bootstrap", "0", "--out", str(out)]) == 0
    doc = json.loads((out / "probe.json").read_text())
    assert "copies in a resample are not its neighbours" in doc["intervals"]
    k = str(doc["main_layer"])
    assert doc["random_prefix"]["tokens"] == doc["random_prefix"]["anchor_tokens"] == 1  # the anchor is "task"
    assert doc["anchor_over_random"]["silhouette"] == pytest.approx(
        doc["layers"][k]["task+anchor"]["silhouette"]["value"] - doc["layers"][k]["task+random"]["silhouette"]["value"])
    assert "anchor over a random prefix of its length (1 tokens)" in capsys.readouterr().out
    assert main(["probe", "--model", str(tiny_model), "--task", str(toy_mixture), "--examples", "12", "--bootstrap",
                 "0", "--no-random-prefix", "--out", str(tmp_path / "off")]) == 0
    assert "task+random" not in json.loads((tmp_path / "off" / "probe.json").read_text())["groups"]


def test_clean_candidates():
    ex = [Record(prompt="Process the list: ka lo", response="{ result : mi ; size : 2 }")]
    assert clean('Instruction: "Map each item and report the size."\nmore', ex, 3, 40) == \
        ("Map each item and report the size.", "")
    assert clean("   \n  ", ex, 3, 40) == (None, "empty")
    assert clean("Map it", ex, 3, 40) == (None, "too short")
    assert clean(" ".join(["word"] * 50), ex, 3, 40) == (None, "too long")
    assert clean("Process the list: ka lo", ex, 3, 40) == (None, "copied from the examples")


def test_ranking_orders_planted_candidates_by_known_gain():
    planted = {"strong anchor text": 0.4, "weak anchor text": 0.05, "harmful anchor text": -0.2}
    table = rank(["weak anchor text", "harmful anchor text", "strong anchor text", "weak anchor text"],
                 planted.__getitem__)
    assert [r["anchor"] for r in table] == ["strong anchor text", "weak anchor text", "harmful anchor text"]
    assert [r["gain"] for r in table] == [0.4, 0.05, -0.2]


def test_anchor_generate_end_to_end(tmp_path, tiny_model, toy_mixture, capsys, monkeypatch):
    import tell.eval.generate as G

    # A random tiny model may write nothing worth keeping, so the first sample is planted (labelled and
    # quoted, as models write them): the ranking is then never empty, and the other 3 are the model's own.
    real, calls = G.generate_batch, []

    def first_planted(*a, **k):
        calls.append(k.get("seed"))
        return ['Instruction: "Judge whether the reply is right."\nmore'] if len(calls) == 1 else real(*a, **k)

    monkeypatch.setattr(G, "generate_batch", first_planted)
    d = toy_mixture.parent
    out = tmp_path / "anchors"
    code = main(["anchor", "generate", "--model", str(tiny_model), "--task", str(d / "task.jsonl"), "--general",
                 str(d / "general.jsonl"), "--candidates", "4", "--examples", "12", "--min-words", "1",
                 "--out", str(out)])
    assert code == 0 and len(calls) == 4 and len(set(calls)) == 4  # one seed per candidate
    doc = json.loads((out / "candidates.json").read_text())
    assert len(doc["ranked"]) + len(doc["rejected"]) == 4
    # The planted text was cleaned (label, quotes and later lines dropped) and ranked with a real gain.
    planted = [r for r in doc["ranked"] if r["anchor"] == "Judge whether the reply is right."]
    assert len(planted) == 1 and np.isfinite(planted[0]["gain"])
    gains = [r["gain"] for r in doc["ranked"]]
    assert gains == sorted(gains, reverse=True)
    best = (out / "anchor.txt").read_text().strip()
    assert best == doc["ranked"][0]["anchor"]
    # The file is what `tell prepare --anchor-file` reads.
    from tell.data.anchor import anchor_from_options
    assert anchor_from_options(None, str(out / "anchor.txt"), "prefix", "\n", False).text == best


def test_anchor_pilot_reranks_through_the_sweep(tmp_path, tiny_model, toy_mixture, monkeypatch):
    from tell.experiments import anchor_gen
    from tell.experiments.config import AnchorConfig

    d = toy_mixture.parent
    ev = write_jsonl(tmp_path / "eval.jsonl", [
        {"prompt": "judge castle river", "response": "json yes", "source": "task", "origin": "e", "row": 0,
         "meta": {"kind": "cloze", "role": "task", "answer": "json yes"}}])
    cfg = AnchorConfig(model=str(tiny_model), task=str(d / "task.jsonl"), general=str(d / "general.jsonl"),
                       pilot=2, eval=str(ev), task_tokens=100, ratio=1.0, out=str(tmp_path / "a"))
    table = [{"anchor": "first anchor text", "gain": 0.3}, {"anchor": "second anchor text", "gain": 0.1},
             {"anchor": "third anchor text", "gain": 0.0}]
    out = anchor_gen.pilot(cfg, [dict(r) for r in table])
    assert [r["anchor"] for r in out][2] == "third anchor text"  # beyond the pilot: order kept
    assert all(r["pilot"]["metric"] == "accuracy" for r in out[:2])
    pilots = [r["pilot"]["value"] for r in out[:2]]
    assert pilots == sorted(pilots, reverse=True)
    assert len(list((tmp_path / "a" / "pilot").glob("*/cells/tell-*"))) == 2


def test_resampled_copies_neither_neighbour_nor_leak_so_intervals_hold_the_estimate():
    """0.1's bootstrap scored a resample's copies as distinct points: a copy sat at distance 0 from its twin (the
    silhouette rose) and on both sides of a probe split, so with few examples the interval excluded its own
    estimate (`silhouette 0.419 [0.425, 0.642]` with 5 examples). Copies now count as one example seen twice."""
    from sklearn.metrics import silhouette_score

    from tell.probe.separation import _cosine_distances, weighted_silhouette

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (6, 8)) + 2, rng.normal(0, 1, (6, 8)) + 2 + np.eye(8)[0]
    x, y = np.concatenate([a, b]), np.array([1] * 6 + [0] * 6)
    dist = _cosine_distances(x)
    plain = silhouette_score(x, y, metric="cosine")
    assert weighted_silhouette(dist, y, np.ones(12)) == pytest.approx(plain)
    # Every example twice is the same data: the same silhouette (scored as points, the copies would raise it).
    assert weighted_silhouette(dist, y, 2 * np.ones(12)) == pytest.approx(plain)
    assert silhouette_score(np.concatenate([x, x]), np.concatenate([y, y]), metric="cosine") > plain + 0.05
    outside = {"silhouette": 0, "probe_accuracy": 0}
    for seed in range(8):
        a, b = rng.normal(0, 1, (5, 16)) + 1.5 * np.eye(16)[0] + 2, rng.normal(0, 1, (5, 16)) + 2
        sep = separation(a, b, bootstrap=40, seed=seed)
        for m in outside:
            lo, hi = sep[m]["ci95"]
            outside[m] += not lo <= sep[m]["value"] <= hi
    assert outside == {"silhouette": 0, "probe_accuracy": 0}


def test_a_probe_writes_its_files_whole_or_not_at_all(tmp_path, tiny_model, toy_mixture, monkeypatch):
    """A probe that fails (the disk fills while its layer curve is written) leaves the last probe's files as they
    were and a new folder not made; one that succeeds at other layers drops the earlier probe's plots, keeping the
    user's own files in the folder."""
    import errno

    from tell.probe import run as probe_run

    out = tmp_path / "probe"
    args = ["probe", "--model", str(tiny_model), "--task", str(toy_mixture), "--examples", "8", "--bootstrap", "0",
            "--no-random-prefix", "--out", str(out)]
    real_curve = probe_run._curve

    def full(result, conds, path):
        real_curve(result, conds, path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(probe_run, "_curve", full)
    assert main(args + ["--layers", "all"]) == 2 and not out.exists()
    monkeypatch.setattr(probe_run, "_curve", real_curve)
    assert main(args + ["--layers", "all"]) == 0
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"tsne_layer1.png", "separation_by_layer.png", "probe.json"} <= set(before)
    monkeypatch.setattr(probe_run, "_curve", full)
    assert main(args + ["--layers", "all", "--seed", "7"]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.setattr(probe_run, "_curve", real_curve)
    assert main(args + ["--layers", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "pca_layer2.png", "probe.json", "tsne_layer2.png"]
    assert json.loads((out / "probe.json").read_text())["main_layer"] == 2


def test_probe_out_under_a_file_is_refused_before_the_model_runs(tmp_path, tiny_model, toy_mixture, capsys,
                                                                 monkeypatch):
    import tell.probe.run as R

    def never(*a, **k):
        raise AssertionError("the model was loaded for an output folder that cannot be written")

    monkeypatch.setattr(R, "load_for_inference", never)
    (tmp_path / "notes").write_text("the user's file\n")
    for out in (tmp_path / "notes", tmp_path / "notes" / "probe"):
        assert main(["probe", "--model", str(tiny_model), "--task", str(toy_mixture), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "expected a folder" in err and str(out) in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "notes").read_text() == "the user's file\n"
