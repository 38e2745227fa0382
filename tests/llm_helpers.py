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


def build(family: str, seed: int = 0, **config):
    """A family's small model; keyword arguments override its config fields."""
    cls, built = FAMILIES[family]()
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
