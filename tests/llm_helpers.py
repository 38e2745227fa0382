"""Small Hugging Face models of each family built from config, a tiny tokenizer trained on
real English (the Python standard library's own documentation, PSF licence), and the inputs
a layer sees, for the LLM tests."""
import inspect

import torch
import transformers as T

VOCAB = 256
_SMALL = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
FAMILIES = {
    "llama": lambda: (T.LlamaForCausalLM, T.LlamaConfig(**_SMALL)),
    "gpt2": lambda: (T.GPT2LMHeadModel, T.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                                                       n_positions=512, bos_token_id=0, eos_token_id=0)),
    "bert": lambda: (T.BertModel, T.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=128)),
    "distilbert": lambda: (T.DistilBertModel, T.DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4,
                                                                 hidden_dim=128)),
    "roberta": lambda: (T.RobertaModel, T.RobertaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                        num_attention_heads=4, intermediate_size=128)),
    "qwen2": lambda: (T.Qwen2ForCausalLM, T.Qwen2Config(**_SMALL)),
    "qwen3": lambda: (T.Qwen3ForCausalLM, T.Qwen3Config(**_SMALL, head_dim=16)),
    "mistral": lambda: (T.MistralForCausalLM, T.MistralConfig(**_SMALL, eos_token_id=0, bos_token_id=0)),
    "phi3": lambda: (T.Phi3ForCausalLM, T.Phi3Config(**_SMALL, pad_token_id=0, eos_token_id=0, bos_token_id=0)),
    "gemma3": lambda: (T.Gemma3ForCausalLM, T.Gemma3TextConfig(**_SMALL, head_dim=16, sliding_window=8,
                                                               layer_types=["sliding_attention", "full_attention"])),
}
# Families for head pruning only (the one-shot tests run FAMILIES): other inputs (ViT's pixels,
# T5's decoder ids) or an FFN layout the LLM paths do not cut.
HEAD_FAMILIES = {
    "albert": lambda: (T.AlbertModel, T.AlbertConfig(vocab_size=VOCAB, embedding_size=32, hidden_size=64,
                                                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)),
    "deberta-v2": lambda: (T.DebertaV2Model, T.DebertaV2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                               num_attention_heads=4, intermediate_size=128)),
    "modernbert": lambda: (T.ModernBertModel, T.ModernBertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)),
    "t5": lambda: (T.T5ForConditionalGeneration, T.T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128,
                                                            num_layers=2, num_heads=4, decoder_start_token_id=0)),
    "vit": lambda: (T.ViTModel, T.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=128, image_size=32, patch_size=8)),
}


def build(family: str, seed: int = 0, **config):
    """A family's small model; keyword arguments override its config fields."""
    cls, built = {**FAMILIES, **HEAD_FAMILIES}[family]()
    for key, value in config.items():
        setattr(built, key, value)
    config = built
    torch.manual_seed(seed)
    return cls(config).eval()


def tiny_llama(layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return T.LlamaForCausalLM(T.LlamaConfig(**{**_SMALL, "num_hidden_layers": layers})).eval()


def english(modules=("argparse", "json", "collections", "logging", "pathlib", "subprocess")) -> str:
    """Real English prose: the docstrings of standard-library modules and their members."""
    pieces = []
    for name in modules:
        module = __import__(name)
        pieces.append(inspect.getdoc(module) or "")
        pieces += [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(module)
                   if inspect.isclass(obj) or inspect.isfunction(obj)]
    return "\n\n".join(p for p in pieces if p)


def tokenizer(text: str | None = None):
    """A byte-level BPE of VOCAB tokens trained on `text` (default: english())."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>"], show_progress=False)
    bpe.train_from_iterator([text or english()], trainer)
    return T.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>")


def layer_inputs(model, layer, batches) -> torch.Tensor:
    """Every input row the layer sees when the model runs each calibration sequence: (tokens, in)."""
    rows = []
    handle = layer.register_forward_hook(lambda m, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1])))
    try:
        with torch.no_grad():
            for row in batches:
                model(input_ids=row.unsqueeze(0))
    finally:
        handle.remove()
    return torch.cat(rows).float()


_MOE = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 128, "num_experts_per_tok": 2}
MOE_FAMILIES = {  # 4 experts, top-2; gpt-oss stores its experts transposed, with biases
    "mixtral": lambda: (T.MixtralForCausalLM, T.MixtralConfig(**_MOE, intermediate_size=32, num_local_experts=4)),
    "qwen2_moe": lambda: (T.Qwen2MoeForCausalLM, T.Qwen2MoeConfig(
        **_MOE, intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4)),
    "qwen3_moe": lambda: (T.Qwen3MoeForCausalLM, T.Qwen3MoeConfig(
        **_MOE, intermediate_size=64, moe_intermediate_size=32, num_experts=4, head_dim=8)),
    "olmoe": lambda: (T.OlmoeForCausalLM, T.OlmoeConfig(**_MOE, intermediate_size=32, num_experts=4,
                                                        eos_token_id=0, pad_token_id=0)),
    "gpt_oss": lambda: (T.GptOssForCausalLM, T.GptOssConfig(
        **_MOE, intermediate_size=32, num_local_experts=4, head_dim=8, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"])),
    "deepseek_v3": lambda: (T.DeepseekV3ForCausalLM, T.DeepseekV3Config(
        **{**_MOE, "num_key_value_heads": 4}, intermediate_size=64, moe_intermediate_size=32, n_routed_experts=4,
        n_shared_experts=1, n_group=1, topk_group=1, first_k_dense_replace=0, q_lora_rank=None, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, rope_parameters={"rope_type": "default",
                                                                              "rope_theta": 10000.0})),
}


def build_moe(family: str, seed: int = 0, dtype=None, **fields):
    """A small mixture-of-experts model of `family` (random weights), in `dtype` if given;
    keyword arguments override its config fields."""
    cls, config = MOE_FAMILIES[family]()
    for key, value in fields.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = cls(config).eval()
    return model.to(dtype) if dtype is not None else model


class _Expert(torch.nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = torch.nn.Linear(hidden, inner, bias=False)
        self.up_proj = torch.nn.Linear(hidden, inner, bias=False)
        self.down_proj = torch.nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LinearExperts(torch.nn.ModuleList):
    """Experts kept as one module of Linear layers each (as older checkpoints and custom code
    do), called like transformers 5's Experts: forward(hidden_states, top_k_index, top_k_weights)."""

    def __init__(self, count: int, hidden: int, inner: int):
        super().__init__([_Expert(hidden, inner) for _ in range(count)])

    def forward(self, hidden, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden)
        for e, expert in enumerate(self):
            token, slot = torch.where(top_k_index == e)
            if token.numel():
                out.index_add_(0, token, expert(hidden[token]) * top_k_weights[token, slot, None])
        return out


def with_linear_experts(model):
    """`model` (an MoE from build_moe) with every block's 3-D experts replaced by LinearExperts
    holding the same weights (non-transposed layouts: gate rows first, then up)."""
    for block in model.model.layers:
        old = block.mlp.experts
        count, inner2, hidden = old.gate_up_proj.shape
        new = LinearExperts(count, hidden, inner2 // 2)
        with torch.no_grad():
            for e, expert in enumerate(new):
                expert.gate_proj.weight.copy_(old.gate_up_proj[e, :inner2 // 2])
                expert.up_proj.weight.copy_(old.gate_up_proj[e, inner2 // 2:])
                expert.down_proj.weight.copy_(old.down_proj[e])
        block.mlp.experts = new
    return model
