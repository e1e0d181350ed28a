"""`tell eval --lm-eval`: lm-evaluation-harness tasks on base model + adapter, through local task YAMLs over data
written here (no download). What is checked against tell's own code: the prompt the harness scores is the one
`tell eval` would give (anchor, plain template), its log-likelihoods are those of the base model *with* the adapter,
and its accuracy is what those log-likelihoods give; the registry/local role rule and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tell.cli import main

from conftest import WORDS, write_jsonl

pytest.importorskip("lm_eval")

ANCHOR = {"text": "judge", "placement": "prefix", "separator": "\n"}


def _task_yaml(folder: Path, name: str, data: Path, delimiter: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: gold\n"
        f"target_delimiter: \"{delimiter}\"\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    """A PEFT adapter with non-zero LoRA weights (so it changes the model's scores) saved as a `tell export`
    would (tell.json records the anchor), and two local tasks: the user's and a general one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lmeval")
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                                LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                                           init_lora_weights=False))
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    (adapter / "tell.json").write_text(json.dumps({"anchor": ANCHOR}))
    mine = write_jsonl(root / "data" / "mine.jsonl", [
        {"q": f"castle {w} river", "choices": ["yes", "no", "json"], "gold": i % 3} for i, w in enumerate(WORDS[10:22])])
    other = write_jsonl(root / "data" / "other.jsonl", [
        {"q": f"sort {w} number", "choices": ["word", "number"], "gold": i % 2} for i, w in enumerate(WORDS[30:38])])
    _task_yaml(root / "tasks", "tell_mine", mine, "")  # the answer follows the template's "### Response:\n"
    _task_yaml(root / "tasks", "tell_other", other, " ")
    return root, adapter


def _loglik(model, tok, context: str, continuation: str) -> float:
    import torch

    ctx = tok(context, add_special_tokens=False)["input_ids"]
    full = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([full])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return float(sum(logp[i - 1, full[i]] for i in range(len(ctx), len(full))))


def test_lm_eval_runs_the_users_task_anchored_in_trainings_template_with_the_adapter(setup, tiny_model, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tell.data.records import Record
    from tell.prompting import prompt_text

    root, adapter = setup
    out = root / "ev"
    args = ["eval", "--model", str(tiny_model), "--adapter", str(adapter), "--lm-eval", "tell_mine",
            "--lm-eval-general", "tell_other", "--lm-eval-include", str(root / "tasks"), "--out", str(out),
            "--batch-size", "4", "--bootstrap", "200", "--no-progress"]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "lm-eval tell_mine (12 items, role task, anchored): acc" in shown
    assert "lm-eval tell_other (8 items, role general): acc" in shown
    metrics = json.loads((out / "metrics.json").read_text())
    mine, other = metrics["lm_eval"]["tasks"]["tell_mine"], metrics["lm_eval"]["tasks"]["tell_other"]
    assert mine["role"] == "task" and mine["anchor"]["text"] == "judge" and mine["chat_template"] == "tell plain"
    assert other["role"] == "general" and other["anchor"] is None and other["chat_template"] is None
    samples = [json.loads(x) for x in (out / "lm_eval_samples.jsonl").read_text().splitlines()]
    assert sorted({s["task"] for s in samples}) == ["tell_mine", "tell_other"] and len(samples) == 20

    tok = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter).eval()
    docs = {"tell_mine": [json.loads(x) for x in (root / "data" / "mine.jsonl").read_text().splitlines()],
            "tell_other": [json.loads(x) for x in (root / "data" / "other.jsonl").read_text().splitlines()]}
    correct: dict[str, list[float]] = {"tell_mine": [], "tell_other": []}
    differs = 0
    for s in samples:
        doc = docs[s["task"]][s["doc_id"]]
        contexts = {a[0] for a in s["arguments"]}
        assert len(contexts) == 1
        context = contexts.pop()
        if s["task"] == "tell_mine":
            # The user's task: what `tell eval` gives a task item (anchor, then tell's plain template).
            assert context == prompt_text(tok, Record(prompt=f"judge\n{doc['q']}", response=""))
        else:
            assert context == doc["q"]  # a general test: the harness's own rendering, no anchor
        got = [r[0] for r in s["response"]]
        sep = "" if s["task"] == "tell_mine" else " "
        want = [_loglik(tuned, tok, context, sep + c) for c in doc["choices"]]
        assert got == pytest.approx(want, abs=1e-4)
        differs += any(abs(_loglik(base, tok, context, sep + c) - w) > 1e-3 for c, w in zip(doc["choices"], want))
        correct[s["task"]].append(float(max(range(len(want)), key=want.__getitem__) == doc["gold"]))
    assert differs == len(samples)  # the adapter was applied to every item
    for name, values in correct.items():
        acc = metrics["lm_eval"]["tasks"][name]["metrics"]["acc"]
        assert acc["value"] == pytest.approx(sum(values) / len(values))
        assert acc["ci"] == "bootstrap over items (tell)" and acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]

    # A rerun in the same folder answers from the request cache kept for this adapter: same numbers, no model call.
    from lm_eval.models.huggingface import HFLM

    calls = []
    real = HFLM.loglikelihood
    HFLM.loglikelihood = lambda self, requests, *a, **k: calls.append(len(requests)) or real(self, requests, *a, **k)
    try:
        assert main(args) == 0
    finally:
        HFLM.loglikelihood = real
    again = json.loads((out / "metrics.json").read_text())
    assert again["lm_eval"]["tasks"] == metrics["lm_eval"]["tasks"]
    assert sum(calls) == 0


def test_lm_eval_role_rule_and_refusals(setup, tiny_model, capsys):
    import lm_eval

    from tell.eval.config import EvalConfig
    from tell.eval.harness import plan, requested, source_role

    root, adapter = setup
    include = [str(root / "tasks")]
    # Source decides unless a flag says otherwise: every file in an include folder -> the user's task, else general.
    registry = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    folders = [(root / "tasks").resolve()]
    assert source_role([root / "tasks" / "tell_mine.yaml"], folders) == "task"
    assert source_role([registry], folders) == "general"
    assert source_role([root / "tasks" / "tell_mine.yaml", registry], folders) == "general"  # a mixed group
    todo = plan({"tell_mine": None, "tell_other": "general"}, include, None)
    assert todo.roles == {"tell_mine": "task", "tell_other": "general"}
    assert requested(EvalConfig(lm_eval=["tell_mine, hellaswag", "tell_mine"], lm_eval_task=["gsm8k"])) == \
        {"tell_mine": None, "hellaswag": None, "gsm8k": "task"}

    bad = root / "bad_tasks"
    _task_yaml(bad, "tell_lost", root / "data" / "missing.jsonl", " ")
    multi = write_jsonl(root / "data" / "multi.jsonl", [{"q": "river", "choices": ["a castle", "the river"], "gold": 1}])
    (bad / "tell_multi.yaml").write_text(
        f"task: tell_multi\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {multi}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: gold\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{q}}\"\n"
        "metric_list:\n  - metric: acc\n", encoding="utf-8")
    base = ["eval", "--model", str(tiny_model), "--adapter", str(adapter), "--lm-eval-include", include[0]]
    cases = [
        (["--lm-eval", "no_such_task"], "unknown lm-evaluation-harness task(s) ['no_such_task']"),
        (["--lm-eval", "tell_mine", "--lm-eval-general", "tell_mine"], "given twice"),
        (["--lm-eval", "tell_mine", "--lm-eval-include", str(root / "nowhere")], "no such folder"),
        (["--lm-eval-include", str(bad), "--lm-eval", "tell_lost"], "could not load the task(s)"),
        (["--lm-eval-include", str(bad), "--lm-eval", "tell_multi"], "multiple inputs"),
        (["--lm-eval", "tell_mine", "--model", str(root / "no_model")], "no such model folder"),
    ]
    for i, (extra, message) in enumerate(cases):
        capsys.readouterr()
        out = root / f"refused{i}"
        assert main(base + extra + ["--out", str(out)]) == 2, extra
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # (the lines before are the data set library's progress bars)
        assert last.startswith("tell: error:") and message in last and "Traceback" not in err, err
        assert not out.exists()  # refused before anything was written


def test_lm_eval_group_shots_and_generation_with_filters(setup, tiny_model, capsys):
    """A group of the user's tasks with one shot: every member anchored, on the shot's turn as on the item's; a
    generation task with two filters counts its items once and scores each filter."""
    root, adapter = setup
    tasks = root / "tasks2"
    _task_yaml(tasks, "tell_g1", root / "data" / "mine.jsonl", "")
    _task_yaml(tasks, "tell_g2", root / "data" / "other.jsonl", "")
    (tasks / "tell_group.yaml").write_text("group: tell_group\ntask:\n  - tell_g1\n  - tell_g2\n"
                                           "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n")
    gen = write_jsonl(root / "data" / "gen.jsonl", [{"q": f"add {w}", "a": "number"} for w in WORDS[40:46]])
    (tasks / "tell_gen.yaml").write_text(
        f"task: tell_gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {gen}\ntest_split: test\n"
        "output_type: generate_until\ndoc_to_text: \"{{q}}\"\ndoc_to_target: \"{{a}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 4\n  do_sample: false\n"
        "filter_list:\n  - name: all\n    filter:\n      - function: take_first\n"
        "  - name: word\n    filter:\n      - function: regex\n        regex_pattern: \"(\\\\w+)\"\n"
        "      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8")
    out = root / "ev-group"
    assert main(["eval", "--model", str(tiny_model), "--adapter", str(adapter), "--lm-eval", "tell_group,tell_gen",
                 "--lm-eval-include", str(tasks), "--shots", "1", "--out", str(out), "--bootstrap", "50",
                 "--no-progress"]) == 0
    shown = capsys.readouterr().out
    assert "lm-eval tell_group (group) (20 items, role task, anchored)" in shown
    res = json.loads((out / "metrics.json").read_text())["lm_eval"]["tasks"]
    assert res["tell_g1"]["items"] == 12 and res["tell_g2"]["items"] == 8 and res["tell_gen"]["items"] == 6
    assert res["tell_g1"]["shots"] == 1 and all(res[n]["role"] == "task" for n in ("tell_g1", "tell_g2", "tell_gen"))
    assert set(res["tell_gen"]["metrics"]) == {"exact_match,all", "exact_match,word"}
    assert res["tell_group"]["group"] and res["tell_group"]["metrics"]["acc"]["ci"].startswith("value +/- 1.96")
    samples = [json.loads(x) for x in (out / "lm_eval_samples.jsonl").read_text().splitlines()]
    for s in samples:
        context = s["arguments"][0][0]
        if s["task"] in ("tell_g1", "tell_g2"):  # the shot's turn and the item's, each anchored
            assert context.count("### Instruction:\njudge\n") == 2, context


def test_lm_eval_scores_the_token_ids_training_used_with_the_llama2_tokenizer(tmp_path, llama2_tokenizer):
    """With Llama-2's SentencePiece tokenizer (adds BOS; `{"` is a different token at the start of a text): the
    ids the harness gives the model for the user's task are tell's training ids, one BOS, the answer cut from
    prompt and answer tokenized together (its EOS is tell's training target only)."""
    from lm_eval.models.huggingface import HFLM

    from tell.data.anchor import Anchor
    from tell.data.records import Record
    from tell.prompting import encode

    from conftest import make_tiny_llama

    _, hf = llama2_tokenizer
    hf.save_pretrained(tmp_path / "tok")
    model = make_tiny_llama(tmp_path / "tok", tmp_path / "llama")
    data = write_jsonl(tmp_path / "d.jsonl", [
        {"q": f"Is the {w} claim made up?", "choices": ['{"thought": "yes"}', '{"thought": "no"}'], "gold": i % 2}
        for i, w in enumerate(WORDS[10:14])])
    _task_yaml(tmp_path / "tasks", "tell_json", data, "")
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(model), "--anchor", "Answer in JSON.", "--lm-eval", "tell_json",
                 "--lm-eval-include", str(tmp_path / "tasks"), "--out", str(out), "--no-progress",
                 "--bootstrap", "0"]) == 0
    samples = [json.loads(x) for x in (out / "lm_eval_samples.jsonl").read_text().splitlines()]
    lm = HFLM(pretrained=str(model), device="cpu")
    anchor = Anchor("Answer in JSON.")
    docs = [json.loads(x) for x in data.read_text().splitlines()]
    assert len(samples) == 4
    for s in samples:
        for context, continuation in s["arguments"]:
            ctx_ids, cont_ids = lm._encode_pair(context, continuation)
            p, a = encode(hf, anchor.apply(Record(prompt=docs[s["doc_id"]]["q"], response=continuation)))
            # The model reads exactly training's ids, with one BOS; the answer's ids are the jointly cut ones.
            assert ctx_ids + cont_ids == p + a[:-1] and p.count(hf.bos_token_id) == 1 and a[-1] == hf.eos_token_id
            # The harness moves the context's trailing newline into the scored part, the same token for every
            # choice: a constant added to each choice's log-likelihood, so which choice wins does not change.
            assert cont_ids[:-len(a) + 1] == p[len(ctx_ids):] == hf("\n", add_special_tokens=False)["input_ids"][-1:]
    # A system anchor reaches the harness as its system instruction: the same text tell gives the model.
    from tell.prompting import prompt_text

    out = tmp_path / "ev-system"
    assert main(["eval", "--model", str(model), "--anchor", "Answer in JSON.", "--anchor-placement", "system",
                 "--lm-eval", "tell_json", "--lm-eval-include", str(tmp_path / "tasks"), "--out", str(out),
                 "--no-progress", "--bootstrap", "0"]) == 0
    system = Anchor("Answer in JSON.", "system")
    for line in (out / "lm_eval_samples.jsonl").read_text().splitlines():
        s = json.loads(line)
        # (tell's plain template adds BOS as an id; written as a chat template, it is BOS's text)
        want = hf.bos_token + prompt_text(hf, system.apply(Record(prompt=docs[s["doc_id"]]["q"], response="")))
        assert {a[0] for a in s["arguments"]} == {want} and want.startswith("<s>Answer in JSON.\n\n### Instruction")
