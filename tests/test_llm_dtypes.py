"""Half precision end to end: a bf16 or fp16 model goes through llm.prune (every method, N:M,
OWL), prune_structured, perplexity and the CLI in its own dtype, with statistics accumulated in
fp32 or wider. (The streamed path's dtype tests are in test_llm_sharded.py.)"""
import copy

import pytest
import torch
from safetensors import safe_open

from llm_helpers import build, english, tokenizer
from prunekit import cli, llm
from prunekit.llm.layers import InputStats, block_layers, collect

HALF = [torch.bfloat16, torch.float16]
TEXT = english()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A bf16 Gemma-3-shaped model and its tokenizer, saved as a user would download it."""
    path = tmp_path_factory.mktemp("bf16")
    build("gemma3").to(torch.bfloat16).save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


def batches(tok, n=4):
    return llm.calibration(tok, TEXT, n=n, seq_len=32)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method, kwargs", [("magnitude", {}), ("wanda", {}), ("sparsegpt", {}),
                                            ("sparsegpt", {"pattern": "2:4"}),
                                            ("wanda", {"allocation": "owl", "owl_lambda": 0.02})])
def test_every_method_prunes_half_precision_in_its_own_dtype(dtype, method, kwargs):
    model = build("llama").to(dtype)
    report = llm.prune(model, torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0)),
                       method=method, sparsity=0.5, **kwargs)
    assert {p.dtype for p in model.parameters()} == {dtype}
    weights = [layer.weight for block in model.model.layers for layer in block_layers(block).values()]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=1e-3) and report.sparsity == pytest.approx(zeros, abs=1e-3)
    assert all(torch.isfinite(w).all() for w in weights)


def test_statistics_of_half_precision_inputs_accumulate_in_fp32_or_wider():
    model = build("llama").to(torch.bfloat16)
    block = model.model.layers[0]
    layers = block_layers(block)
    x = torch.randint(0, 256, (2, 32))
    stats = collect(block, layers, lambda: model(input_ids=x), gram=True)
    some = next(iter(stats.values()))
    assert isinstance(some, InputStats) and some.squares.dtype == torch.float64 and some.gram.dtype == torch.float32
    assert some.norms().dtype == torch.float32 and torch.isfinite(some.hessian()).all()


def test_perplexity_of_a_bf16_model_is_its_fp32_perplexity_within_a_percent(folder):
    import transformers
    model, tok = llm.load(folder)
    assert next(model.parameters()).dtype == torch.bfloat16  # loaded as stored
    wide = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    half, full = (llm.perplexity(m, tok, TEXT[:2000], seq_len=64)["perplexity"] for m in (model, wide))
    assert half == pytest.approx(full, rel=0.01)


def test_structured_cuts_keep_bf16_and_reload(folder, tmp_path):
    import transformers
    model, tok = llm.load(folder)
    llm.prune_structured(model, batches(tok), ffn=0.25, layers=1, recover=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert {p.dtype for p in again.parameters()} == {torch.bfloat16}
    x = batches(tok, 1)
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, again(input_ids=x).logits)


def _stored_dtypes(folder):
    out = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            out |= {f.get_slice(name).get_dtype() for name in f.keys()}
    return out


@pytest.mark.parametrize("flags", [["--method", "sparsegpt", "--pattern", "2:4"], ["--ffn", "0.25", "--recover"],
                                   ["--stream", "--method", "wanda"]])
def test_the_cli_writes_a_bf16_model_as_bf16(folder, tmp_path, flags):
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    out = tmp_path / "out"
    assert cli.main(["llm", "prune", "--model", str(folder), "--calibration", str(text), "--n", "4",
                     "--seq-len", "32", "--out", str(out), "--quiet", *flags]) in (0, None)
    assert _stored_dtypes(out) == {"BF16"}


def test_half_precision_pruning_is_deterministic():
    """Determinism in half precision: same model, same batches, same masks."""
    model = build("llama").to(torch.bfloat16)
    x = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    llm.prune(a, x, method="sparsegpt", sparsity=0.5)
    llm.prune(b, x, method="sparsegpt", sparsity=0.5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
