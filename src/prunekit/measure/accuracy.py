"""Top-1 accuracy over an iterable of (x, y) batches, under eval() and no_grad."""
import torch
from torch import nn

from prunekit._utils.inputs import as_inputs
from prunekit.errors import PruneError
from prunekit.measure import _run


def _logits(output):
    """The class scores in a model's output: a tensor, `.logits` (HF style) or the first item."""
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "logits", None) is not None:
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise PruneError(f"cannot find class scores in the model output ({type(output).__name__}); "
                     "return a logits tensor")


def _batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise PruneError(f"data must yield (x, y) pairs, got a {type(batch).__name__}")
    x, y = batch
    inputs = as_inputs(tuple(x) if isinstance(x, list) else x, tensors_only=True)
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    return inputs, y


def _check_labels(y, classes) -> None:
    """A label the model has no output for would count as wrong, silently: refused. Batch by
    batch, as `data` is any iterable (train.evaluate checks a split's labels once)."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise PruneError(f"labels {int(y.min())}..{int(y.max())} in the data, but the model has {classes} outputs "
                         f"(classes 0..{classes - 1}): give data whose classes the model has")


def top1(model: nn.Module, data) -> float:
    """Fraction of samples whose argmax over the last dim equals the label, in [0, 1]."""
    try:
        batches = iter(data)
    except TypeError:
        raise PruneError(f"data must be an iterable of (x, y) batches, got {type(data).__name__}") from None
    correct = total = 0
    with _run.inference(model):
        for batch in batches:
            inputs, y = _batch(batch)
            logits = _logits(_run.forward(model, inputs))
            predicted = logits.argmax(dim=-1)
            if predicted.shape != y.shape:
                raise PruneError(f"predictions have shape {tuple(predicted.shape)} but labels "
                                 f"{tuple(y.shape)}; labels must be class indices")
            _check_labels(y, logits.shape[-1])
            correct += int((predicted == y.to(predicted.device)).sum())
            total += y.numel()
    if total == 0:
        raise PruneError("data yielded no samples; give at least one (x, y) batch")
    return correct / total
