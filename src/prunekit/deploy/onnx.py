"""ONNX export of a pruned model, checked against PyTorch in ONNX Runtime.

Masks are baked into plain weights first (a masked weight would export as weight * mask,
one more op per layer) and sparse-kernel layers go back to plain Linear layers (ONNX has no
op for them; ONNX Runtime densifies sparse initializers at load anyway). Structurally pruned
models export as the smaller dense models they are.
"""
import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from prunekit._utils.atomic import atomic_path
from prunekit._utils.inputs import as_inputs
from prunekit.deploy.sparse_layer import sparse_layers_as_plain
from prunekit.errors import PruneError
from prunekit.masks import make_permanent


def _runtime():
    try:
        import onnxruntime
    except ImportError:
        raise PruneError("ONNX export needs onnx and onnxruntime: pip install 'prunekit[deploy]'") from None
    return onnxruntime


def export_onnx(model: nn.Module, example_inputs, path, *, opset: int = 17, check: bool = True) -> dict:
    """Write `model` as ONNX to `path` (batch dimension dynamic); with `check`, run it in ONNX
    Runtime on the example inputs and compare with PyTorch. Returns {"path", "bytes",
    "max_abs_diff"}; a disagreement beyond float tolerance is an error and leaves no file."""
    ort = _runtime()
    inputs = as_inputs(example_inputs, tensors_only=True)
    with sparse_layers_as_plain(model):
        plain = make_permanent(copy.deepcopy(model)).eval()
    names = [f"input{i}" for i in range(len(inputs))]
    path = Path(path)
    with torch.no_grad():
        expected = plain(*inputs)
    if not isinstance(expected, torch.Tensor):
        raise PruneError("ONNX export here takes models with one tensor output")
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(plain, inputs, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                          output_names=["output"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "output": {0: "batch"}})
        diff = None
        if check:
            got = torch.from_numpy(session(tmp, ort=ort).run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0])
            diff = float((got - expected).abs().max())
            if diff > 1e-4 * (float(expected.abs().max()) + 1):
                raise PruneError(f"the ONNX model disagrees with PyTorch: max abs diff {diff:.3g}")
    return {"path": str(path), "bytes": path.stat().st_size, "max_abs_diff": diff}


def session(path, threads: int | None = None, ort=None):
    """An ONNX Runtime CPU session with every graph optimisation, `threads` intra-op threads."""
    ort = ort or _runtime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind an nn.Module forward (tensors in, tensor out), so that
    it is timed side by side with PyTorch models."""

    def __init__(self, path, threads: int | None = None):
        super().__init__()
        self.session = session(path, threads)
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs):
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.names, inputs)}
        return torch.from_numpy(self.session.run(None, feeds)[0])
