"""GGUF in, Hugging Face and GGUF out: prunekit's GGUF writer on tiny Llama / Gemma-3 models built
from config, read back by transformers' own GGUF reader (the test of record), llm.load of a GGUF
giving a plain model, and `prunekit llm prune --model X.gguf [--format gguf]` end to end."""
import json

import gguf
import pytest
import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from llm_helpers import build, english
from prunekit import PruneError, llm
from prunekit.cli import main
from prunekit.llm.gguf_export import save_gguf

TEXT = "The json module encodes Python objects; decoding them back gives equal values."


def bpe_tokenizer(vocab=320):
    """Byte-level BPE with real merges (llm_helpers.tokenizer's 256 tokens leave none to write)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>"], show_progress=False)
    bpe.train_from_iterator([english(("json", "argparse"))], trainer)
    return T.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>")


def tiny(family, vocab, **config):
    if family == "llama":
        return build("llama", vocab_size=vocab, **config)
    # llama.cpp's Gemma 3: 5 sliding-window layers to 1 global, attention scaled by 1/sqrt(head_dim)
    torch.manual_seed(0)
    config = {"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 256, "query_pre_attn_scalar": 256,
              "sliding_window": 8, "max_position_embeddings": 512, **config}
    model = T.Gemma3ForCausalLM(T.Gemma3TextConfig(**config)).eval()
    with torch.no_grad():  # norms start at 0 (a scale of 1): random ones check the stored 1 + w
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small gain nothing from a second thread, and lose 3x to spinning when the 2 cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    tok = bpe_tokenizer()
    out = {"tokenizer": tok, "root": root}
    for family in ("llama", "gemma3"):
        out[family] = tiny(family, len(tok))
        save_gguf(out[family], tok, root / f"{family}.gguf")
    (root / "calibration.txt").write_text(english(("collections", "logging")))
    return out


def logits(model, tokenizer, text=TEXT):
    with torch.no_grad():
        return model(tokenizer(text, return_tensors="pt").input_ids).logits.float()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_transformers_reads_our_gguf_as_the_same_model_and_tokenizer(files, family):
    root, tok = files["root"], files["tokenizer"]
    model = T.AutoModelForCausalLM.from_pretrained(root, gguf_file=f"{family}.gguf").eval()
    back = T.AutoTokenizer.from_pretrained(root, gguf_file=f"{family}.gguf")
    assert back(TEXT).input_ids == tok(TEXT).input_ids and len(tok(TEXT).input_ids) > 8  # past the sliding window
    assert back.decode(back(TEXT).input_ids) == TEXT
    prose = english(("pathlib",))[:5000]  # text the merges were not trained on
    assert back(prose).input_ids == tok(prose).input_ids
    assert torch.allclose(logits(model, tok), logits(files[family], tok), atol=1e-5)
    reader = gguf.GGUFReader(root / f"{family}.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F32" and types["output_norm.weight"] == "F32"
    assert ("output.weight" in types) == (family == "llama")  # gemma3 ties it to the embedding


def test_llama_q_and_k_are_stored_in_llama_cpp_order(files):
    """llama.cpp rotates interleaved pairs: rows (0, d/2) of a head are adjacent in the file."""
    reader = gguf.GGUFReader(files["root"] / "llama.gguf")
    stored = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    q = files["llama"].model.layers[0].self_attn.q_proj.weight.detach()
    head = 16  # 64 / 4 heads
    assert torch.equal(stored["blk.0.attn_q.weight"][0], q[0]) and torch.equal(stored["blk.0.attn_q.weight"][1],
                                                                                q[head // 2])


def test_llm_load_of_a_gguf_is_a_plain_model_that_save_pretrained_writes(files, tmp_path):
    model, tok = llm.load(files["root"] / "gemma3.gguf")
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None and not hasattr(model, "quantization_method")
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    assert "quantization_config" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    again = T.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(logits(again, tok), logits(model, tok))
    assert torch.allclose(logits(again, tok), logits(files["gemma3"], tok), atol=1e-5)
    assert model.generate(tok(TEXT, return_tensors="pt").input_ids, max_new_tokens=2, do_sample=False).shape[1] > 2


def test_a_quantized_gguf_loads_dequantized_and_saves(files, tmp_path, monkeypatch):
    """Q8_0 blocks (as llama.cpp quantizes) come back as plain float Linear weights."""
    import prunekit.llm.gguf_export as export
    plain = export._array

    def q8_0(tensor, gguf_module):
        if tensor.dim() == 2:
            q8 = gguf.GGMLQuantizationType.Q8_0
            return gguf.quants.quantize(tensor.numpy(), q8), q8
        return plain(tensor, gguf_module)
    monkeypatch.setattr(export, "_array", q8_0)
    tok = files["tokenizer"]
    save_gguf(files["llama"], tok, tmp_path / "q8.gguf")
    assert "Q8_0" in {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "q8.gguf").tensors}
    model, _ = llm.load(tmp_path / "q8.gguf")
    assert type(model.model.layers[0].mlp.down_proj) is torch.nn.Linear and model.dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None and getattr(model.config, "quantization_config", None) is None
    assert (logits(model, tok) - logits(files["llama"], tok)).abs().max() < 0.1  # Q8_0's rounding, no more
    model.save_pretrained(tmp_path / "hf")
    assert torch.equal(logits(T.AutoModelForCausalLM.from_pretrained(tmp_path / "hf"), tok), logits(model, tok))


def test_bf16_in_bf16_out(files, tmp_path):
    tok = files["tokenizer"]
    model = tiny("llama", len(tok)).to(torch.bfloat16)
    save_gguf(model, tok, tmp_path / "bf16.gguf")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "bf16.gguf").tensors}
    assert types["blk.0.ffn_down.weight"] == "BF16" and types["blk.0.attn_norm.weight"] == "F32"
    back, _ = llm.load(tmp_path / "bf16.gguf", dtype=torch.bfloat16)
    assert {p.dtype for p in back.parameters()} == {torch.bfloat16}
    model.save_pretrained(tmp_path / "hf")  # the reference: `.to(bf16)` also rounds the rotary buffer, loading does not
    reference = T.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.bfloat16).eval()
    assert torch.equal(logits(back, tok), logits(reference, tok))


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_a_structurally_pruned_model_round_trips(files, tmp_path, family):
    tok = files["tokenizer"]
    model = tiny(family, len(tok))
    batches = llm.calibration(tok, english(("collections",)), n=2, seq_len=32, seed=0)
    llm.prune_structured(model, batches, heads=0.5, ffn=0.25)
    save_gguf(model, tok, tmp_path / "slim.gguf")
    back = T.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="slim.gguf").eval()
    arch = "llama" if family == "llama" else "gemma3"
    fields = gguf.GGUFReader(tmp_path / "slim.gguf").fields
    assert fields[f"{arch}.attention.head_count"].contents() == model.config.num_attention_heads == 2
    assert fields[f"{arch}.feed_forward_length"].contents() == 96
    assert torch.allclose(logits(back, tok), logits(model, tok), atol=1e-5)


def test_what_gguf_cannot_describe_is_refused_before_writing(files, tmp_path):
    tok = files["tokenizer"]
    uneven = tiny("llama", len(tok))
    mlp = uneven.model.layers[1].mlp  # one block narrower than the config says
    for name in ("gate_proj", "up_proj"):
        setattr(mlp, name, torch.nn.Linear(64, 96, bias=False))
    mlp.down_proj = torch.nn.Linear(96, 64, bias=False)
    scaled = tiny("gemma3", len(tok), query_pre_attn_scalar=16)  # llama.cpp scales by 1/sqrt(head_dim)
    cases = [(uneven, "one size for every block"), (scaled, "query_pre_attn_scalar"),
             (build("gpt2"), "model type 'gpt2'")]
    for model, message in cases:
        with pytest.raises(PruneError, match=message):
            save_gguf(model, tok, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


def test_cli_prunes_a_gguf_and_saves_hugging_face_or_gguf(files, tmp_path):
    root, tok = files["root"], files["tokenizer"]
    common = ["--calibration", str(root / "calibration.txt"), "--n", "2", "--seq-len", "32", "--quiet"]
    assert main(["llm", "prune", "--model", str(root / "llama.gguf"), *common, "--out", str(tmp_path / "hf")]) == 0
    wanda = T.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    weights = [p for n, p in wanda.named_parameters() if "layers" in n and p.dim() == 2]
    assert sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights) == pytest.approx(0.5, abs=0.01)
    save_gguf(wanda, tok, tmp_path / "sparse.gguf")  # unstructured zeros are kept, exactly (though not faster)
    sparse, _ = llm.load(tmp_path / "sparse.gguf")
    assert all(torch.equal(a, b) for a, b in zip(sparse.state_dict().values(), wanda.state_dict().values()))
    assert main(["llm", "prune", "--model", str(root / "gemma3.gguf"), *common, "--heads", "0.5", "--ffn", "0.25",
                 "--format", "gguf", "--out", str(tmp_path / "gg"), "--json", str(tmp_path / "gg.json")]) == 0
    assert [p.name for p in (tmp_path / "gg").iterdir()] == ["model.gguf"]
    assert json.loads((tmp_path / "gg.json").read_text())["format"] == "gguf"
    slim, _ = llm.load(tmp_path / "gg" / "model.gguf")
    assert (slim.config.num_attention_heads, slim.config.intermediate_size) == (2, 96)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_refuses_an_unsupported_family_before_pruning(files, tmp_path, capsys):
    folder = tmp_path / "gpt2"
    build("gpt2").save_pretrained(folder)
    files["tokenizer"].save_pretrained(folder)
    code = main(["llm", "prune", "--model", str(folder), "--calibration", str(files["root"] / "calibration.txt"),
                 "--format", "gguf", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr()
    assert code == 2 and len(err.err.strip().splitlines()) == 1
    assert "'gpt2'" in err.err and "llama, gemma3" in err.err and "wanda" not in err.out
    code = main(["llm", "prune", "--model", str(files["root"] / "gemma3.gguf"), "--layers", "1", "--format", "gguf",
                 "--calibration", str(files["root"] / "calibration.txt"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr()
    assert code == 2 and "5 sliding-window to 1 global" in err.err and "structured" not in err.out
    assert main(["llm", "prune", "--model", str(folder), "--stream", "--format", "gguf", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    assert "drop --stream" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_damaged_gguf_is_one_prune_error_naming_it(files, tmp_path):
    data = (files["root"] / "llama.gguf").read_bytes()
    for name, content in [("cut.gguf", data[:3000]), ("short.gguf", data[:len(data) // 2]), ("text.gguf", b"hello")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(PruneError, match=f"{name}: transformers can't read this GGUF"):
            llm.load(tmp_path / name)


def test_the_fetched_gemma_conversion_saves_the_gguf_as_a_plain_folder(files, tmp_path):
    from prunekit.data import assets
    assets._gguf_to_folder(files["root"] / "gemma3.gguf", tmp_path / "gemma")
    assert "quantization_config" not in json.loads((tmp_path / "gemma" / "config.json").read_text())
    model = T.AutoModelForCausalLM.from_pretrained(tmp_path / "gemma").eval()
    assert torch.allclose(logits(model, files["tokenizer"]), logits(files["gemma3"], files["tokenizer"]), atol=1e-5)
