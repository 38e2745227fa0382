"""llm.calibration, llm.perplexity and llm.load on small models and a tokenizer trained here."""
import itertools
import math

import pytest
import torch

from llm_helpers import english, tiny_llama, tokenizer
from prunekit import PruneError, llm

TOKENIZER = tokenizer()
TEXT = english()


def test_calibration_draws_distinct_windows_of_the_text_reproducibly():
    ids = TOKENIZER(TEXT, add_special_tokens=False)["input_ids"]
    batches = llm.calibration(TOKENIZER, TEXT, n=16, seq_len=64, seed=3)
    assert batches.shape == (16, 64) and batches.dtype == torch.long
    assert torch.equal(batches, llm.calibration(TOKENIZER, TEXT, n=16, seq_len=64, seed=3))
    assert not torch.equal(batches, llm.calibration(TOKENIZER, TEXT, n=16, seq_len=64, seed=4))
    text_ids = torch.tensor(ids)
    starts = []
    for row in batches:  # each window is a piece of the text, and no two overlap
        windows = text_ids.unfold(0, 64, 1)
        starts.append(int((windows == row).all(1).nonzero()[0]))
    starts.sort()
    assert all(b - a >= 64 for a, b in itertools.pairwise(starts))


def test_calibration_text_too_short_is_one_line():
    with pytest.raises(PruneError, match="give more text"):
        llm.calibration(TOKENIZER, TEXT[:1000], n=64, seq_len=512)
    with pytest.raises(PruneError, match="non-empty string"):
        llm.calibration(TOKENIZER, "  ")


def reference_perplexity(model, ids):
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0)).logits[0]
    return math.exp(float(torch.nn.functional.cross_entropy(logits[:-1], ids[1:])))


def test_perplexity_of_one_window_is_the_plain_cross_entropy():
    model = tiny_llama()
    ids = torch.tensor(TOKENIZER(TEXT, add_special_tokens=False)["input_ids"][:200])
    result = llm.perplexity(model, TOKENIZER, TEXT, seq_len=256, max_tokens=200)
    assert result["tokens"] == 199 and result["windows"] == 1
    assert result["perplexity"] == pytest.approx(reference_perplexity(model, ids), rel=1e-4)


@pytest.mark.parametrize("seq_len, stride", [(64, None), (64, 16), (50, 50), (64, 63)])
def test_perplexity_scores_each_token_once_all_after_the_first_where_windows_overlap(seq_len, stride):
    result = llm.perplexity(tiny_llama(), TOKENIZER, TEXT, seq_len=seq_len, stride=stride, max_tokens=300)
    overlapping = stride is not None and stride < seq_len
    assert result["tokens"] == (299 if overlapping else 300 - result["windows"])
    assert result["windows"] == (math.ceil((300 - seq_len) / stride) + 1 if overlapping else math.ceil(300 / seq_len))
    assert result["stride"] == (stride or seq_len) and result["seq_len"] == seq_len
    assert math.isfinite(result["perplexity"]) and result["perplexity"] > 1


def test_overlapping_windows_score_the_same_tokens_with_more_context():
    model = tiny_llama()
    a = llm.perplexity(model, TOKENIZER, TEXT, seq_len=64, stride=63, max_tokens=400)
    b = llm.perplexity(model, TOKENIZER, TEXT, seq_len=64, stride=16, max_tokens=400)
    assert a["tokens"] == b["tokens"] == 399 and b["windows"] > a["windows"]
    assert a["perplexity"] != b["perplexity"] and abs(math.log(a["perplexity"] / b["perplexity"])) < 0.1


def test_perplexity_bad_protocol_is_one_line():
    with pytest.raises(PruneError, match="stride"):
        llm.perplexity(tiny_llama(), TOKENIZER, TEXT, seq_len=32, stride=64)


def test_load_reads_a_saved_folder_as_causal_lm_or_encoder(tmp_path):
    from llm_helpers import build
    for family, cls_name in (("llama", "LlamaForCausalLM"), ("bert", "BertModel")):
        build(family).save_pretrained(tmp_path / family)
        TOKENIZER.save_pretrained(tmp_path / family)
        model, tok = llm.load(tmp_path / family)
        assert type(model).__name__ == cls_name and not model.training
        assert tok("hello")["input_ids"] == TOKENIZER("hello")["input_ids"]
    with pytest.raises(PruneError, match="no config.json"):
        llm.load(tmp_path)


def test_encoder_agreement_is_perfect_for_the_same_model_and_drops_after_pruning(tmp_path):
    from llm_helpers import build
    model = build("bert")
    texts = llm.sentences(TEXT, n=40)
    assert len(set(texts)) == 40 and all(40 <= len(t) <= 300 for t in texts)
    dense = llm.embed(model, TOKENIZER, texts, batch=16)
    assert torch.allclose(dense.norm(dim=1), torch.ones(40))
    same = llm.agreement(dense, llm.embed(model, TOKENIZER, texts, batch=7))  # batching does not matter
    assert same["cosine"] == pytest.approx(1.0, abs=1e-5) and same["retrieval_top1"] == 1.0
    llm.prune(model, llm.calibration(TOKENIZER, TEXT, n=4, seq_len=64), method="magnitude", sparsity=0.9)
    pruned = llm.agreement(dense, llm.embed(model, TOKENIZER, texts))
    assert pruned["cosine"] < 1 - 1e-4 and pruned["queries"] == 20 and pruned["corpus"] == 20
    with pytest.raises(PruneError, match="sentences"):
        llm.sentences("Too short.", n=5)


def test_with_a_bos_token_every_window_starts_with_it_and_every_token_is_scored():
    tok = tokenizer()
    tok.add_special_tokens({"bos_token": "<pad>"})  # any token id will do for the protocol
    batches = llm.calibration(tok, TEXT, n=4, seq_len=32)
    assert batches.shape == (4, 32) and (batches[:, 0] == tok.bos_token_id).all()
    model = tiny_llama()
    result = llm.perplexity(model, tok, TEXT, seq_len=64, max_tokens=300)
    assert result["bos"] and result["tokens"] == 300 and result["windows"] == math.ceil(300 / 63)
    ids = torch.tensor([tok.bos_token_id] + tok(TEXT, add_special_tokens=False)["input_ids"][:40])
    one = llm.perplexity(model, tok, TEXT, seq_len=64, max_tokens=40)
    assert one["tokens"] == 40 and one["perplexity"] == pytest.approx(reference_perplexity(model, ids), rel=1e-4)
    assert llm.perplexity(model, tok, TEXT, seq_len=64, stride=16, max_tokens=300)["tokens"] == 300
