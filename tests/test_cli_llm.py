"""prunekit llm prune | evaluate on a small Llama saved as a Hugging Face folder."""
import json

import pytest
import torch
import transformers

from llm_helpers import build, english, tiny_llama, tokenizer
from prunekit.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    tiny_llama().save_pretrained(root / "model")
    tokenizer().save_pretrained(root / "model")
    (root / "calibration.txt").write_text(english(("argparse", "json", "collections")))
    (root / "evaluation.txt").write_text(english(("logging", "pathlib")))
    return root


@pytest.mark.parametrize("method, extra", [("wanda", ["--owl", "--sparsity", "0.6"]), ("sparsegpt", ["--pattern", "2:4"]),
                                           ("magnitude", [])])
def test_prune_writes_a_folder_that_from_pretrained_reads(folder, tmp_path, method, extra):
    out = tmp_path / "pruned"
    code = main(["llm", "prune", "--model", str(folder / "model"), "--method", method, *extra, "--calibration",
                 str(folder / "calibration.txt"), "--n", "8", "--seq-len", "64", "--out", str(out),
                 "--json", str(tmp_path / "r.json"), "--quiet"])
    assert code == 0
    figures = json.loads((tmp_path / "r.json").read_text())
    report = figures["unstructured"]
    expected = 0.6 if "--owl" in extra else 0.5
    assert report["sparsity"] == pytest.approx(expected, abs=0.01) and figures["calibration"]["sequences"] == 8
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    weights = [p for n, p in model.named_parameters() if "layers" in n and p.dim() == 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(report["sparsity"], abs=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pruned")]


def test_structured_flags_cut_heads_ffn_and_blocks_then_from_pretrained_reads_it(folder, tmp_path):
    out = tmp_path / "slim"
    code = main(["llm", "prune", "--model", str(folder / "model"), "--heads", "0.5", "--ffn", "0.25", "--layers", "1",
                 "--recover", "--calibration", str(folder / "calibration.txt"), "--n", "4", "--seq-len", "32",
                 "--out", str(out), "--json", str(tmp_path / "s.json"), "--quiet"])
    assert code == 0
    figures = json.loads((tmp_path / "s.json").read_text())
    assert "unstructured" not in figures and len(figures["structured"]["removed_layers"]) == 1
    config = transformers.AutoConfig.from_pretrained(out)
    assert (config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (1, 2, 96)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == figures["structured"]["params_after"]


def test_stream_writes_what_the_in_memory_path_writes(folder, tmp_path):
    common = ["--model", str(folder / "model"), "--method", "sparsegpt", "--calibration", str(folder / "calibration.txt"),
              "--n", "4", "--seq-len", "32", "--quiet"]
    assert main(["llm", "prune", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["llm", "prune", *common, "--stream", "--out", str(tmp_path / "b")]) == 0
    a = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main(["llm", "prune", *common, "--stream", "--ffn", "0.5", "--out", str(tmp_path / "c")]) == 2


def test_evaluate_prints_and_writes_the_perplexity_and_its_protocol(folder, tmp_path, capsys):
    code = main(["llm", "evaluate", "--model", str(folder / "model"), "--text", str(folder / "evaluation.txt"),
                 "--seq-len", "64", "--max-tokens", "500", "--json", str(tmp_path / "e.json"), "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["tokens"] == 500 - result["windows"] and result["seq_len"] == 64
    assert f"perplexity {result['perplexity']:.3f}" in capsys.readouterr().out


def test_user_errors_are_one_line_and_write_nothing(folder, tmp_path, capsys, home):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = [
        (["prune", "--model", str(folder / "model"), "--out", str(tmp_path / "full")], "is not empty"),
        (["prune", "--model", str(tmp_path), "--out", str(tmp_path / "new")], "no config.json"),
        (["prune", "--model", "gemma3-270m", "--out", str(tmp_path / "new")], "run: prunekit data fetch gemma3-270m"),
        (["prune", "--model", str(folder / "model"), "--out", str(tmp_path / "new")],
         "run: prunekit data fetch python-docs"),
        (["prune", "--model", str(folder / "model"), "--calibration", str(folder / "calibration.txt"),
          "--pattern", "2:3", "--n", "2", "--seq-len", "16", "--out", str(tmp_path / "new")], "multiple of M=3"),
    ]
    for argv, message in cases:
        assert main(["llm", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()
    encoder = tmp_path / "bert"
    build("bert").save_pretrained(encoder)
    tokenizer().save_pretrained(encoder)
    assert main(["llm", "evaluate", "--model", str(encoder), "--text", str(folder / "evaluation.txt"), "--quiet"]) == 2
    assert "needs a causal language model" in capsys.readouterr().err
