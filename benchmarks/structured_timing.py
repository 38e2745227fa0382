"""Structured-pruning wall time: prunekit vs Torch-Pruning 1.6.1 (analysis + pruning).

Models (random init, eval mode): torchvision ResNet-50, ResNet-152 and ViT-B/16 on a 1x3x224x224
input, and a ~1.1B-parameter Llama-style model built from transformers.LlamaConfig (hidden 2048,
16 layers, 32 heads, 8 KV heads (GQA), head dim 64, MLP 8192, vocab 32000, untied lm_head) on a
(1, 16) token batch, in --dtype (default float32; bfloat16 also works for both tools).
`llama_tiny` (hidden 256, 2 layers) is there for quick checks.

Each repeat prunes a fresh deep copy of the same model with each tool, in one process, in
rotated order (so drift and cache effects hit both alike); the table reports the median of
--repeats and the ratio prunekit / Torch-Pruning (the goal is <= 0.5). Timed: the whole call,
prunekit's pk.prune_structured (trace, scoring, surgery, its own check forward), Torch-Pruning's
BasePruner construction (dependency graph) + step() + the attribute fixups its examples do.
With --breakdown (default on) the dependency analysis alone is timed too, on the unpruned
model: prunekit.graph.analyze vs tp.DependencyGraph().build_dependency.
After the first repeat each pruned model must run forward with the dense output shape; the
JSON records its parameter count and which weights changed shape (what each tool pruned).

Recipes, ratio 0.5 (--ratio):
  prunekit: pk.prune_structured(model, inputs, ratio=0.5), defaults, all models.
  Torch-Pruning, tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5, local:
    ResNets: ignored_layers=[model.fc].
    ViT-B/16 (its prune_timm_vit.py recipe): ignored_layers=[model.heads.head],
      num_heads={each nn.MultiheadAttention: 12}, head dims prunable (prune_head_dims=True,
      prune_num_heads=False); after step(): model.hidden_dim = model.conv_proj.out_channels.
    Llama (its examples/LLMs/prune_llm.py recipe): ignored_layers=[lm_head],
      num_heads={q_proj: 32, k_proj: 8, v_proj: 8}, prune_num_heads=True, prune_head_dims=False
      (RoPE stays intact), head_pruning_ratio=0.5, round_to=4, output_transform=logits (needed
      with transformers 5: the output also holds a cache); after step(): num_key_value_groups
      and the config sizes updated, as the example does.
  At the time of writing both tools prune only the MLP hidden width of ViT-B/16 (3072 -> 1536);
  on Llama both prune the hidden size and MLP width, and Torch-Pruning also removes query heads
  while prunekit keeps all heads: see "changes" in the JSON for the exact shapes.

    python benchmarks/structured_timing.py [--models resnet50,resnet152,vit_b_16,llama_1b]
        [--repeats 3] [--ratio 0.5] [--dtype float32] [--attn sdpa] [--threads N] [--json out.json]
"""
import argparse
import copy
import gc
import json
import re
import statistics
import time
import warnings
from pathlib import Path

MODELS = ("resnet50", "resnet152", "vit_b_16", "llama_1b")
LLAMA = {
    "llama_1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=32000),
    "llama_tiny": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=8,
                       num_key_value_heads=2, head_dim=32, intermediate_size=1024, vocab_size=1000),
}
TOOLS = ("prunekit", "torch_pruning")


def build(name, dtype, attn):
    """(model, example inputs tuple), random init with seed 0, eval mode."""
    import torch
    torch.manual_seed(0)
    if name in LLAMA:
        from transformers import LlamaConfig, LlamaForCausalLM
        config = LlamaConfig(**LLAMA[name], use_cache=False, tie_word_embeddings=False)
        model = LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=getattr(torch, dtype))
        tokens = torch.randint(0, config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
        return model.eval(), (tokens,)
    import torchvision
    model = torchvision.models.get_model(name, weights=None)
    return model.eval(), (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)),)


def logits(out):
    return out.logits if hasattr(out, "logits") else out


# ---------------------------------------------------------------- the two tools

def prune_prunekit(model, inputs, ratio):
    import prunekit as pk
    pk.prune_structured(model, inputs, ratio=ratio)


def _tp_llama_fixups(model):
    """examples/LLMs/prune_llm.py's attribute updates, for transformers 5's LlamaAttention."""
    config = model.config
    config.hidden_size = model.lm_head.in_features
    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            heads = module.q_proj.out_features // module.head_dim
            kv_heads = module.k_proj.out_features // module.head_dim
            module.num_key_value_groups = heads // kv_heads
            config.num_attention_heads, config.num_key_value_heads = heads, kv_heads
        elif name.endswith("mlp"):
            config.intermediate_size = module.gate_proj.out_features


def tp_kwargs(model, ratio):
    """Torch-Pruning's recipe for each model (see the module docstring)."""
    import torch_pruning as tp
    from torch import nn
    kwargs = dict(importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                  global_pruning=False)
    if hasattr(model, "lm_head"):
        heads = {}
        for name, module in model.named_modules():
            if name.endswith("self_attn"):
                heads[module.q_proj] = model.config.num_attention_heads
                heads[module.k_proj] = model.config.num_key_value_heads
                heads[module.v_proj] = model.config.num_key_value_heads
        kwargs.update(ignored_layers=[model.lm_head], num_heads=heads, prune_num_heads=True,
                      prune_head_dims=False, head_pruning_ratio=ratio, round_to=4,
                      output_transform=logits)
    elif hasattr(model, "heads"):  # torchvision VisionTransformer
        kwargs.update(ignored_layers=[model.heads.head], prune_num_heads=False, prune_head_dims=True,
                      num_heads={m: m.num_heads for m in model.modules()
                                 if isinstance(m, nn.MultiheadAttention)})
    else:
        kwargs.update(ignored_layers=[model.fc])
    return kwargs


def prune_torch_pruning(model, inputs, ratio):
    import torch_pruning as tp
    pruner = tp.pruner.BasePruner(model, inputs, **tp_kwargs(model, ratio))
    pruner.step()
    if hasattr(model, "lm_head"):
        _tp_llama_fixups(model)
    elif hasattr(model, "hidden_dim"):  # torchvision ViT reads hidden_dim in forward
        model.hidden_dim = model.conv_proj.out_channels


def analyze_prunekit(model, inputs):
    from prunekit.graph import analyze
    analyze(model, inputs)


def analyze_torch_pruning(model, inputs):
    import torch_pruning as tp
    tp.DependencyGraph().build_dependency(
        model, example_inputs=inputs, output_transform=logits if hasattr(model, "lm_head") else None)


PRUNE = {"prunekit": prune_prunekit, "torch_pruning": prune_torch_pruning}
ANALYZE = {"prunekit": analyze_prunekit, "torch_pruning": analyze_torch_pruning}


# ---------------------------------------------------------------- measurement

def _shapes(model):
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def changes(before, model):
    """Distinct weight shape changes, block indices folded: what the tool pruned."""
    seen = {}
    for name, shape in _shapes(model).items():
        if before.get(name) != shape:
            pattern = re.sub(r"(?<=[._])\d+(?=\.)", "*", name, count=1)  # the block index
            seen.setdefault(f"{pattern}: {list(before.get(name, ()))} -> {list(shape)}", None)
    return list(seen)


def check(model, inputs, dense_shape):
    import torch
    with torch.no_grad():
        shape = tuple(logits(model(*inputs)).shape)
    if shape != dense_shape:
        raise RuntimeError(f"pruned output {shape} != dense {dense_shape}")


def _first_line(err):
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def measure(name, args):
    import torch
    template, inputs = build(name, args.dtype, args.attn)
    with torch.no_grad():
        dense_shape = tuple(logits(template(*inputs)).shape)
    before = _shapes(template)
    result = {"model": name, "params": sum(p.numel() for p in template.parameters()),
              "dtype": str(next(template.parameters()).dtype).replace("torch.", ""),
              "input": list(inputs[0].shape), "ratio": args.ratio, "tools": {}}
    items = [("prune", t) for t in TOOLS] + ([("analyze", t) for t in TOOLS] if args.breakdown else [])
    samples = {item: [] for item in items}
    errors = {}
    for r in range(args.repeats):
        shift = r % len(items)
        for kind, tool in items[shift:] + items[:shift]:
            if (kind, tool) in errors:
                continue
            model = copy.deepcopy(template) if kind == "prune" else template
            gc.collect()
            try:
                start = time.perf_counter()
                (PRUNE[tool](model, inputs, args.ratio) if kind == "prune" else ANALYZE[tool](model, inputs))
                samples[(kind, tool)].append(time.perf_counter() - start)
                if kind == "prune" and r == 0:
                    check(model, inputs, dense_shape)
                    result["tools"].setdefault(tool, {}).update(
                        params_after=sum(p.numel() for p in model.parameters()),
                        changes=changes(before, model))
            except Exception as err:  # noqa: BLE001 - a tool failing is a result
                errors[(kind, tool)] = _first_line(err)
            del model
    for (kind, tool), values in samples.items():
        entry = result["tools"].setdefault(tool, {})
        if (kind, tool) in errors:
            entry[f"{kind}_error"] = errors[(kind, tool)]
        entry[f"{kind}_s"] = values
        entry[f"{kind}_median_s"] = statistics.median(values) if values and (kind, tool) not in errors else None
    pk, tp = result["tools"]["prunekit"], result["tools"]["torch_pruning"]
    for kind in ("prune", "analyze"):
        a, b = pk.get(f"{kind}_median_s"), tp.get(f"{kind}_median_s")
        result[f"{kind}_ratio_pk_over_tp"] = a / b if a and b else None
    return result


def _fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def print_row(r):
    pk, tp = r["tools"]["prunekit"], r["tools"]["torch_pruning"]
    print(f"{r['model']:>10} {r['params'] / 1e6:8.1f}M {_fmt(pk.get('prune_median_s')):>8} "
          f"{_fmt(tp.get('prune_median_s')):>8} {_fmt(r['prune_ratio_pk_over_tp']):>7} | "
          f"{_fmt(pk.get('analyze_median_s')):>8} {_fmt(tp.get('analyze_median_s')):>8} "
          f"{_fmt(r['analyze_ratio_pk_over_tp']):>7} | "
          f"{_fmt(pk.get('params_after', None) and pk['params_after'] / 1e6, '.1f'):>7}M "
          f"{_fmt(tp.get('params_after', None) and tp['params_after'] / 1e6, '.1f'):>7}M", flush=True)
    for tool, entry in (("prunekit", pk), ("Torch-Pruning", tp)):
        for key in ("prune_error", "analyze_error"):
            if key in entry:
                print(f"{'':>10} {tool} {key.split('_')[0]} failed: {entry[key]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma list of {', '.join(MODELS + ('llama_tiny',))}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype of the Llama model (the torchvision models stay float32)")
    parser.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"),
                        help="Llama attention implementation")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the dependency analysis alone")
    parser.add_argument("--json")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS and n not in LLAMA]
    if unknown:
        parser.error(f"unknown models {unknown}")
    import torch
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    import torch_pruning  # noqa: F401

    import prunekit  # noqa: F401  (imports stay outside the timed region)
    print(f"median of {args.repeats} runs, ratio {args.ratio}, {torch.get_num_threads()} threads")
    print(f"{'':>10} {'':>9} {'prune + analysis (s)':^25} | {'analysis alone (s)':^25} | params after")
    print(f"{'model':>10} {'params':>9} {'prunekit':>8} {'TP':>8} {'pk/TP':>7} | "
          f"{'prunekit':>8} {'TP':>8} {'pk/TP':>7} | {'prunekit':>8} {'TP':>8}")
    results = []
    for name in names:
        results.append(measure(name, args))
        print_row(results[-1])
    for r in results:
        for tool, entry in r["tools"].items():
            print(f"\n{r['model']} / {tool} pruned:" + "".join(f"\n    {c}" for c in entry.get("changes", [])))
    ratios = [r["prune_ratio_pk_over_tp"] for r in results if r["prune_ratio_pk_over_tp"]]
    if ratios:
        print(f"\nprunekit / Torch-Pruning time: {', '.join(f'{r:.2f}' for r in ratios)} "
              f"(goal <= 0.5: {'met' if max(ratios) <= 0.5 else 'not met'} on "
              f"{sum(x <= 0.5 for x in ratios)}/{len(ratios)} models)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "repeats": args.repeats, "ratio": args.ratio, "threads": torch.get_num_threads(),
            "dtype": args.dtype, "attn": args.attn, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
