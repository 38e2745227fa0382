"""The fuzzer's seed inputs (tests/fuzzing.py): small weights in every stored form, pk.save files
of a small pruned model (dense, compressed, int8, with sparse kernels in the plan) and Linear
layers for every sparse kernel. Built the same way on every call (fixed generators)."""
import copy
import warnings
from pathlib import Path

import torch

import prunekit as pk
from prunekit.deploy import apply_kernels
from prunekit.serialization import codecs

LAYER_KERNELS = ("csr16", "csr32", "delta8", "bitmask", "nm", "torch-csr", "delta8/1t")


def _sparse(g, shape, density, dtype=torch.float32):
    w = torch.randn(shape, generator=g)
    w[torch.rand(shape, generator=g) >= density] = 0
    return w.to(dtype)


def _nm(g, rows, width, n, m):
    w = torch.randn(rows, width, generator=g).view(rows, -1, m)
    return w.scatter(-1, w.abs().argsort(-1)[..., :m - n], 0.0).view(rows, width)


def weights() -> dict:
    """Small weights of every kind a form meets: odd shapes, empty rows, all zero, dense, N:M,
    gaps over 255 columns (delta8's bridges), 1-D, 4-D, empty, half precision."""
    g = torch.Generator().manual_seed(0)
    odd = _sparse(g, (5, 7), 0.4)
    odd[2] = 0
    wide = torch.zeros(3, 600)
    wide[0, [0, 300, 599]], wide[2, [256, 511]] = torch.tensor([1.5, -2.0, 3.0]), torch.tensor([0.5, 4.0])
    return {"odd-5x7": odd, "zero-4x9": torch.zeros(4, 9), "dense-3x5": torch.randn(3, 5, generator=g),
            "2:4-8x16": _nm(g, 8, 16, 2, 4), "1:8-6x32": _nm(g, 6, 32, 1, 8), "4:8-4x16": _nm(g, 4, 16, 4, 8),
            "1:16-3x48": _nm(g, 3, 48, 1, 16), "2:8-5x24": _nm(g, 5, 24, 2, 8), "wide-3x600": wide,
            "vec-6": _sparse(g, (6,), 0.5), "conv-4x3x2x2": _sparse(g, (4, 3, 2, 2), 0.3),
            "empty-0x5": torch.zeros(0, 5), "sparse-12x20": _sparse(g, (12, 20), 0.1),
            "half-6x8": _sparse(g, (6, 8), 0.3, torch.float16)}


def decode_seeds() -> list:
    """(key, form, parts, shape, dtype) of every weight in every form that holds it, plain and int8."""
    out = []
    for name, w in weights().items():
        matrix = codecs._matrix(w)
        for form, parts in codecs._candidates(matrix).items():
            out.append((f"{form}", form, parts, list(w.shape), w.dtype))
            int8 = codecs._as_int8(form, dict(parts), *matrix.shape)
            out.append((f"{form}+int8", form, int8, list(w.shape), w.dtype))
    return out


def _lenet():
    return pk.zoo.build("lenet300", in_features=32, num_classes=10, hidden=(24, 16))


def file_seeds(folder) -> dict:
    """{name: bytes} of pk.save files: masked, N:M, permanent with sparse kernels; dense,
    compressed and compressed int8."""
    torch.manual_seed(0)
    masked, nm = _lenet(), _lenet()
    pk.prune_magnitude(masked, 0.8)
    pk.prune_nm(nm, 1, 8)
    kernels_a = apply_kernels(pk.make_permanent(copy.deepcopy(masked)),
                              {"net.1": "csr16", "net.3": "delta8", "net.5": "bitmask"})
    kernels_b = apply_kernels(pk.make_permanent(copy.deepcopy(masked)),
                              {"net.1": "csr32", "net.3": "torch-csr", "net.5": "csr16/1t"})
    kernels_nm = apply_kernels(pk.make_permanent(copy.deepcopy(nm)), {"net.1": "nm", "net.3": "nm"})
    plan = [("masked-dense", masked, {}), ("masked-compressed", masked, {"format": "compressed"}),
            ("masked-int8", masked, {"format": "compressed", "int8": True}),
            ("nm-compressed", nm, {"format": "compressed"}), ("nm-int8", nm, {"format": "compressed", "int8": True}),
            ("kernels-compressed", kernels_a, {"format": "compressed"}), ("kernels-dense", kernels_b, {}),
            ("kernels-nm-int8", kernels_nm, {"format": "compressed", "int8": True})]
    out = {}
    for name, model, kwargs in plan:
        path = Path(folder) / f"seed-{name}.safetensors"
        pk.save(model, path, **kwargs)
        out[name] = path.read_bytes()
    return out


def layer_seeds() -> list:
    """(key, kernel, Linear) for every kernel, on rows of 7, 70 and 300 inputs (partial mask
    bytes, several 64-bit words, delta8 bridges); N:M weights for the nm kernel."""
    g = torch.Generator().manual_seed(1)
    shapes = {"5x7": _sparse(g, (5, 7), 0.5), "6x70": _sparse(g, (6, 70), 0.3), "4x300": _sparse(g, (4, 300), 0.02),
              "2:4-6x16": _nm(g, 6, 16, 2, 4), "1:8-5x32": _nm(g, 5, 32, 1, 8), "4:8-3x24": _nm(g, 3, 24, 4, 8)}
    out = []
    for i, (name, w) in enumerate(shapes.items()):
        for kernel in LAYER_KERNELS:
            if (kernel == "nm") != (":" in name):
                continue
            linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=(i + len(kernel)) % 2 == 0)
            with torch.no_grad():
                linear.weight.copy_(w)
            out.append((kernel, kernel, linear))
    return out


class Seeds:
    """The seed inputs, built once per worker process (deterministic)."""

    def __init__(self, folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.decode, self.layers, self.files = decode_seeds(), layer_seeds(), file_seeds(folder)
        self.folder = Path(folder)
