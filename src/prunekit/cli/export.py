"""prunekit export: re-save a model as dense or compressed safetensors."""


def add(add_parser, common):
    p = add_parser("export", parents=[common], help="re-save a model as dense or compressed safetensors")
    p.add_argument("input"), p.add_argument("output")
    p.add_argument("--format", default="compressed", choices=["dense", "compressed"])
    p.set_defaults(func=run)


def run(args):
    from prunekit import serialization
    serialization.save(serialization.load(args.input), args.output, format=args.format)
    print(f"wrote {args.output}")
