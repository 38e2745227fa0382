"""prunekit llm prune | evaluate: one-shot pruning of a Hugging Face model, and its perplexity.

    prunekit llm prune --model gemma3-270m --method wanda --sparsity 0.5 --out pruned/
    prunekit llm prune --model DIR --method sparsegpt --pattern 2:4 --calibration text.txt --out pruned/
    prunekit llm prune --model DIR --heads 0.25 --ffn 0.2 --layers 4 --recover --out slim/
    prunekit llm evaluate --model pruned/ [--text FILE] [--json FILE]

--model is a Hugging Face folder, a .gguf file, or a model fetched with `prunekit data fetch`
(gemma3-270m, minilm-l6). Without --calibration / --text, the Python docs fetched with
`prunekit data fetch python-docs` are used: calibration from the HOWTOs and FAQ, evaluation on
the Tutorial (disjoint chapters). The pruned model is written with save_pretrained, tokenizer
beside it, into a new folder (written under a temporary name, then renamed). Structured flags
(--heads, --ffn, --layers, --recover) cut first; --method then also prunes weights one shot.
Under `torchrun --nproc-per-node N -m prunekit llm prune ...` the calibration sequences are shared
across the processes and every layer's statistics summed before its mask is chosen (the same
masks as one process); rank 0 writes.
--format gguf writes DIR/model.gguf instead, for llama.cpp (Llama and Gemma 3; tensors unquantized,
in the model's dtype). A structurally pruned model is smaller and faster there; unstructured zeros
are not (llama.cpp has no sparse kernels), so an unstructured GGUF is only a format convenience.
"""
import os
import shutil
import tempfile
from pathlib import Path

from prunekit.cli._args import check_outputs, positive_int, write_json
from prunekit.errors import PruneError


def add(add_parser, common):
    p = add_parser("llm", help="one-shot Wanda / SparseGPT / magnitude pruning of a Hugging Face model; perplexity")
    sub = p.add_subparsers(dest="llm_command", required=True)
    pr = sub.add_parser("prune", parents=[common], help="prune block by block on calibration text, save_pretrained")
    _model_args(pr)
    pr.add_argument("--method", help="wanda (the default without structured flags), sparsegpt, magnitude")
    pr.add_argument("--sparsity", type=float, default=0.5, help="fraction of each block's weights (default 0.5)")
    pr.add_argument("--pattern", help="N:M, e.g. 2:4 (sets the sparsity)")
    pr.add_argument("--owl", action="store_true", help="per-block sparsity by outliers (OWL) instead of uniform")
    pr.add_argument("--heads", type=float, default=0.0, help="structured: fraction of heads to remove (whole key/value groups where it can)")
    pr.add_argument("--ffn", type=float, default=0.0, help="structured: fraction of FFN neurons to remove")
    pr.add_argument("--layers", type=int, default=0, help="structured: number of blocks to remove (least influence)")
    pr.add_argument("--recover", action="store_true", help="structured: re-fit the layers reading removed units")
    pr.add_argument("--calibration", help="a text file (default: the fetched python-docs HOWTOs)")
    pr.add_argument("--sequences", "--n", dest="n", type=positive_int, default=64,
                    help="calibration sequences (default 64; under torchrun write --sequences: torchrun reads --n "
                         "as its own --nnodes)")
    pr.add_argument("--stream", action="store_true", help="never hold the whole model: block by block from its "
                    "safetensors shards to new shards (larger than memory; one-shot methods, uniform)")
    pr.add_argument("--device", help="run each block there, e.g. cuda (default: where the model is)")
    pr.add_argument("--out", required=True, help="a new folder for the pruned model")
    pr.add_argument("--format", choices=("hf", "gguf"), default="hf",
                    help="hf: save_pretrained (default); gguf: OUT/model.gguf for llama.cpp (llama, gemma3), "
                    "tensors unquantized; --heads/--ffn/--layers make it faster there, unstructured zeros do not "
                    "(llama.cpp has no sparse kernels)")
    pr.set_defaults(func=run_prune)
    ev = sub.add_parser("evaluate", parents=[common], help="perplexity on a text")
    _model_args(ev)
    ev.add_argument("--text", help="a text file (default: the fetched python-docs Tutorial)")
    ev.add_argument("--max-tokens", type=positive_int, help="score only the text's first tokens")
    ev.add_argument("--stride", type=positive_int, help="window step (default: --seq-len, no overlap)")
    ev.set_defaults(func=run_evaluate)


def _model_args(p):
    p.add_argument("--model", required=True, help="a Hugging Face folder, a .gguf file, gemma3-270m or minilm-l6")
    p.add_argument("--seq-len", type=positive_int, default=512, help="tokens per sequence (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here as JSON")


def _load(name, quiet):
    import transformers

    from prunekit import llm
    from prunekit.data import assets
    if quiet:
        transformers.utils.logging.disable_progress_bar()
    return llm.load(assets.require(name) if name in assets.MODELS else name)


def _text(path, part):
    from prunekit.data import assets
    if path is None:
        return (assets.require("python-docs") / part).read_text(), f"python-docs {part}"
    return Path(path).read_text(), str(path)


def run_prune(args):
    from prunekit.train import distributed
    check_outputs(files=[args.json], folders=[args.out])
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise PruneError(f"--out {out} exists and is not empty: give a new folder")
    if args.stream and args.format != "hf":
        raise PruneError("--stream writes safetensors shards: --format gguf needs the model in memory, drop --stream")
    distributed.start()  # under torchrun: calibration shared across the processes (llm/ranks.py), rank 0 writes
    distributed.barrier()  # every rank has checked --out before rank 0 writes it
    if args.stream:
        return _run_stream(args, out)
    model, tokenizer, figures = _prune_in_memory(args, out)
    if distributed.is_writer():
        _save_folder(model, tokenizer, out, args.format)
        if args.json:
            write_json(args.json, figures)
        print(f"saved to {out}")
    distributed.barrier()


def _prune_in_memory(args, out: Path):
    from prunekit import llm
    from prunekit.train.distributed import is_writer
    model, tokenizer = _load(args.model, args.quiet)
    if args.format == "gguf":  # an unsupported family or tokenizer is refused before any pruning
        from prunekit.llm.gguf_export import check_writable
        check_writable(model, tokenizer, layers=args.layers)
    text, source = _text(args.calibration, "howto.txt")
    batches = llm.calibration(tokenizer, text, n=args.n, seq_len=args.seq_len, seed=args.seed)
    figures = {"model": args.model, "out": str(out), "format": args.format, "calibration": {
        "text": source, "sequences": args.n, "seq_len": args.seq_len, "seed": args.seed}}
    say = print if is_writer() else (lambda *_: None)
    structured = args.heads or args.ffn or args.layers
    if structured:
        report = llm.prune_structured(model, batches, heads=args.heads, ffn=args.ffn, layers=args.layers,
                                      recover=args.recover, device=args.device)
        figures["structured"] = vars(report)
        say(f"structured: {report.params_before:,} -> {report.params_after:,} parameters "
            f"(blocks removed {report.removed_layers}, heads {report.heads}, ffn {report.ffn}), {report.seconds:.1f} s")
    if args.method or args.pattern or args.owl or not structured:
        report = llm.prune(model, batches, method=args.method or "wanda", sparsity=args.sparsity, pattern=args.pattern,
                           allocation="owl" if args.owl else "uniform", device=args.device)
        figures["unstructured"] = vars(report)
        say(f"{report.method}{' ' + args.pattern if args.pattern else ''}: {report.sparsity:.1%} of the blocks' "
            f"weights zero, {report.seconds:.1f} s")
    return model, tokenizer, figures


def _run_stream(args, out: Path) -> None:
    import transformers

    from prunekit import llm
    from prunekit._utils.hf_folder import reading
    from prunekit.data import assets
    from prunekit.train.distributed import is_writer
    if args.heads or args.ffn or args.layers or args.owl or args.device:
        raise PruneError("--stream prunes weights one shot, uniformly, on the CPU: no --heads, --ffn, --layers, "
                         "--owl or --device")
    folder = assets.require(args.model) if args.model in assets.MODELS else Path(args.model)
    with reading(folder):  # no tokenizer files, a cut-off config.json: one line naming the folder
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    text, source = _text(args.calibration, "howto.txt")
    batches = llm.calibration(tokenizer, text, n=args.n, seq_len=args.seq_len, seed=args.seed)
    report = llm.prune_sharded(folder, out, batches, method=args.method or "wanda", sparsity=args.sparsity,
                               pattern=args.pattern)
    if not is_writer():
        return
    if args.json:
        write_json(args.json, {"unstructured": vars(report), "model": args.model, "out": str(out), "stream": True,
                               "calibration": {"text": source, "sequences": args.n, "seq_len": args.seq_len,
                                               "seed": args.seed}})
    print(f"{report.method}{' ' + args.pattern if args.pattern else ''} (streamed): {report.sparsity:.1%} of the "
          f"blocks' weights zero, {report.seconds:.1f} s; saved to {out}")


def _save_folder(model, tokenizer, out: Path, fmt: str = "hf") -> None:
    """save_pretrained (or model.gguf) into a temporary folder beside `out`, renamed onto it when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if fmt == "gguf":
            from prunekit.llm.gguf_export import save_gguf
            save_gguf(model, tokenizer, tmp / "model.gguf")
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # checked empty before pruning
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_evaluate(args):
    from prunekit import llm
    check_outputs(files=[args.json])
    model, tokenizer = _load(args.model, args.quiet)
    text, source = _text(args.text, "tutorial.txt")
    result = llm.perplexity(model, tokenizer, text, seq_len=args.seq_len, stride=args.stride,
                            max_tokens=args.max_tokens)
    result.update(model=args.model, text=source)
    if args.json:
        write_json(args.json, result)
    print(f"perplexity {result['perplexity']:.3f} on {result['tokens']} tokens of {source} "
          f"(windows of {result['seq_len']}, stride {result['stride']})")
