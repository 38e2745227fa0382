"""prunekit bench: a saved model in every deployable form (dense baseline, pruned, sparse
kernels, ONNX Runtime, int8), timed side by side over batch sizes and thread counts."""
import argparse

from prunekit.cli._args import MODEL_HELP, add_weights, check_outputs, ints, load_model, positive_int, write_json


def add(add_parser, common):
    p = add_parser("bench", parents=[common], help="latency, throughput, memory and energy of every deployable form")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--baseline", help="the unpruned model, named the same ways: adds the dense and dense-int8 rows")
    add_weights(p)
    p.add_argument("--input-shape", type=ints, default=(1, 28, 28), help="one sample's shape (default 1,28,28)")
    p.add_argument("--batches", type=ints, default=(1, 32), help="batch sizes (default 1,32)")
    p.add_argument("--threads", type=ints, default=(1, 2), help="thread counts (default 1,2)")
    p.add_argument("--forms", default="dense,pruned,sparse,onnx,int8,dense-int8",
                   help="which forms, comma-separated (default all)")
    p.add_argument("--repeats", type=positive_int, default=30)
    p.add_argument("--json")
    p.set_defaults(func=run)


def run(args):
    from prunekit.deploy.bench import bench
    check_outputs(files=[args.json])
    model = load_model(args.model, args)
    baseline = load_model(args.baseline, argparse.Namespace(weights=None, trust_pickle=args.trust_pickle)) \
        if args.baseline else None
    rows = bench(model, args.input_shape, baseline=baseline, batches=args.batches, threads=args.threads,
                 forms=[f.strip() for f in args.forms.split(",") if f.strip()], repeats=args.repeats)
    if args.json:
        write_json(args.json, {"model": args.model, "baseline": args.baseline, "rows": rows})
    print(f"{'form':<11}{'threads':>8}{'batch':>7}{'median ms':>11}{'p10':>9}{'p90':>9}"
          f"{'samples/s':>11}{'speedup':>9}{'peak MiB':>10}")
    for r in rows:
        lat = {k: 1e3 * v for k, v in r["latency"].items()}
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        memory = f"{r['peak_memory'] / 2**20:.1f}" if r["peak_memory"] is not None else "-"
        print(f"{r['form']:<11}{r['threads']:>8}{r['batch']:>7}{lat['median_s']:>11.3f}{lat['p10_s']:>9.3f}"
              f"{lat['p90_s']:>9.3f}{r['throughput']:>11.1f}{speed:>9}{memory:>10}")
