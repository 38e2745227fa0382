"""prunekit export: re-save a model as dense or compressed safetensors (optionally int8
values), or as ONNX checked in ONNX Runtime; prints the sizes."""
from prunekit.cli._args import ints


def add(add_parser, common):
    p = add_parser("export", parents=[common], help="re-save a model: dense, compressed (int8 values) or ONNX")
    p.add_argument("input"), p.add_argument("output")
    p.add_argument("--format", default="compressed", choices=["dense", "compressed", "onnx"])
    p.add_argument("--int8", action="store_true", help="compressed only: kept values as int8, one scale per row")
    p.add_argument("--input-shape", type=ints, default=(1, 28, 28),
                   help="onnx only: one sample's shape (default 1,28,28); the batch stays dynamic")
    p.set_defaults(func=run)


def run(args):
    from pathlib import Path

    import torch

    from prunekit import serialization
    model = serialization.load(args.input)
    before = Path(args.input).stat().st_size
    if args.format == "onnx":
        from prunekit.deploy.onnx import export_onnx
        result = export_onnx(model, torch.randn(1, *args.input_shape), args.output)
        note = f", checked in ONNX Runtime: max abs diff {result['max_abs_diff']:.2g}"
    else:
        serialization.save(model, args.output, format=args.format, int8=args.int8)
        note = ""
    after = Path(args.output).stat().st_size
    print(f"wrote {args.output}: {after:,} bytes ({after / before:.3f}x of {args.input}, {before:,} bytes){note}")
