"""prunekit export: re-save a model as dense or compressed safetensors (optionally int8
values), or as ONNX checked in ONNX Runtime; prints the sizes."""
from prunekit.cli._args import check_outputs, ints


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
    check_outputs(files=[args.output])
    model = serialization.load(args.input)
    before = Path(args.input).stat().st_size
    if args.format == "onnx":
        from prunekit.deploy.onnx import export_onnx
        check_input_shape(model, args.input_shape)
        result = export_onnx(model, torch.randn(1, *args.input_shape), args.output)
        note = f", checked in ONNX Runtime: max abs diff {result['max_abs_diff']:.2g}"
    else:
        serialization.save(model, args.output, format=args.format, int8=args.int8)
        note = ""
    after = Path(args.output).stat().st_size
    print(f"wrote {args.output}: {after:,} bytes ({after / before:.3f}x of {args.input}, {before:,} bytes){note}")


def check_input_shape(model, shape) -> None:
    """Run the model once on zeros of one sample of `shape`, before anything is written: a shape
    it cannot take is one line naming the shape and what the model's first layer reads, not the
    exporter's traceback."""
    import torch
    from torch import nn

    from prunekit.errors import PruneError
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    except Exception as err:  # noqa: BLE001 - whatever the forward raises, the shape is the cause to name
        first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))), None)
        reads = "" if first is None else (f"; its first layer ({type(first).__name__}) reads "
                                          + (f"{first.in_features} features per sample" if isinstance(first, nn.Linear)
                                             else f"{first.in_channels} input channels"))
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruneError(f"--input-shape {','.join(map(str, shape))} does not fit the model: a zero input of shape "
                         f"{[1, *shape]} fails ({cause}){reads}") from None
    finally:
        model.train(was_training)
