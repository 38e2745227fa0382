"""prunekit run RECIPE.yaml: the whole pipeline a recipe describes, its outputs and the
resolved recipe in the recipe's `out` folder, written under a temporary folder renamed onto it
when the run is complete (a refused or failed run leaves `out` as it was)."""
import argparse
import json
from pathlib import Path

from prunekit.cli._args import check_outputs


def add(add_parser, common):
    p = add_parser("run", parents=[common], help="run a recipe (YAML): prune, compare or llm, end to end")
    p.add_argument("recipe", help="a recipe file (see recipes/ and docs/reference/recipes.md)")
    p.add_argument("--out", help="write here instead of the recipe's out folder")
    p.add_argument("--check", action="store_true", help="validate and print the resolved recipe; run nothing")
    p.set_defaults(func=run)


def run(args):
    from prunekit import recipes
    recipe = recipes.load(args.recipe)
    if args.out:
        recipe = recipe.model_copy(update={"out": args.out})
    if args.check:
        print(recipes.dump(recipe), end="")
        return
    check_outputs(folders=[recipe.out])
    if recipe.task == "llm":
        return _run_llm(recipe, args.quiet)
    result = recipes.run(recipe, quiet=args.quiet)
    if recipe.task == "slim":
        r = result["ratios"]
        print(f"{result['original']['params']:,} -> {result['slim']['params']:,} parameters; measured speedup "
              f"{r['speedup']:.2f}x, MACs {r['theoretical_speedup']:.2f}x; wrote {recipe.out}/result.json, recipe.yaml, "
              "model.safetensors")
        return
    from rich.console import Console

    from prunekit.report import comparison_table
    Console(width=150).print(comparison_table(result))
    print(f"wrote {recipe.out}/result.json, recipe.yaml" + (", report.html" if recipe.report else ""))


def _run_llm(recipe, quiet):
    """An llm recipe is the options of `prunekit llm prune` and `llm evaluate`, run in turn."""
    from prunekit import recipes
    from prunekit._utils.atomic import atomic_dir, write_text
    from prunekit.cli import llm
    from prunekit.errors import PruneError
    out = Path(recipe.out)
    if out.exists() and any(out.iterdir()):
        raise PruneError(f"out folder {out} exists and is not empty: give a new one")
    p, c = recipe.prune, recipe.calibration
    with atomic_dir(out) as staged:
        write_text(staged / "recipe.yaml", recipes.dump(recipe))
        llm.run_prune(argparse.Namespace(
            model=recipe.model, method=p.method, sparsity=p.sparsity, pattern=p.pattern, owl=p.owl, heads=p.heads,
            ffn=p.ffn, layers=p.layers, recover=p.recover, calibration=c.text, n=c.n, seq_len=c.seq_len,
            seed=recipe.seed, stream=False, device=None, out=str(staged / "model"), json=str(staged / "prune.json"),
            format="hf", quiet=quiet))
        _repoint(staged / "prune.json", "out", str(out / "model"))
        if recipe.evaluate is not None:
            for name, model in (("dense", recipe.model), ("pruned", str(staged / "model"))):
                llm.run_evaluate(argparse.Namespace(
                    model=model, text=recipe.evaluate.text, max_tokens=recipe.evaluate.max_tokens, stride=None,
                    seq_len=c.seq_len, seed=recipe.seed, json=str(staged / f"perplexity-{name}.json"), quiet=quiet))
            _repoint(staged / "perplexity-pruned.json", "model", str(out / "model"))
    print(f"wrote {out}/model, recipe.yaml, prune.json" + (", perplexity-*.json" if recipe.evaluate else ""))


def _repoint(path: Path, key: str, value: str) -> None:
    """The figures name the model where it ends up, not the temporary folder it was written in."""
    from prunekit._utils.atomic import write_text
    figures = json.loads(path.read_text())
    figures[key] = value
    write_text(path, json.dumps(figures, indent=2, default=str))
