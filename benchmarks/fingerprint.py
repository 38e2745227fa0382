"""Behaviour fingerprint: the masks and removed channels that prunekit picks on every zoo model.

A refactor that should not change behaviour must print the same digests before and after:
    python benchmarks/fingerprint.py > before.txt   (on the old commit)
    python benchmarks/fingerprint.py | diff before.txt -
Each line: model, call, sha256 of the masks (or of the removed-channel dict) in a fixed order.
The one-shot methods of the compare registry run too (those that need no training data).
"""
import hashlib
import json

import torch

import prunekit as pk
from prunekit import zoo

try:  # the registry of compare's methods moved in the package regrouping
    from prunekit.experiments import methods
except ImportError:  # pragma: no cover - the layout before it
    from prunekit.experiments import methods

ONE_SHOT = ("magnitude-global", "magnitude-layer", "structured", "hybrid", "lamp", "erk", "nm-2:4")
INPUTS = {"lenet300": (1, 1, 28, 28), "lenet5": (1, 1, 28, 28), "smallcnn": (1, 1, 28, 28),
          "mnistcnn": (1, 1, 28, 28), "resnet8": (1, 1, 28, 28), "mlp1d": (1, 40)}


def _fresh(name):
    torch.manual_seed(0)
    return zoo.build(name)


def _digest(model, extra=None):
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _calls(name, x):
    yield "magnitude-global-0.8", lambda m: pk.prune_magnitude(m, 0.8)
    yield "magnitude-layer-0.5", lambda m: pk.prune_magnitude(m, 0.5, scope="layer")
    yield "magnitude-random-0.5", lambda m: pk.prune_magnitude(m, 0.5, criterion="random", seed=3)
    yield "nm-2:4", lambda m: pk.prune_nm(m, 2, 4)
    yield "structured-0.3", lambda m: pk.prune_structured(m, x, ratio=0.3).removed
    yield "structured-global-0.5", lambda m: pk.prune_structured(m, x, ratio=0.5, scope="global").removed
    for method in ONE_SHOT:
        yield f"method:{method}", lambda m, method=method: methods.get(method)(m, x, 0.6, 0) and None


def main():
    for name, shape in INPUTS.items():
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        for label, call in _calls(name, x):
            model = _fresh(name)
            try:
                extra = call(model)
                out = _digest(model, extra if isinstance(extra, dict) else None)
            except Exception as err:  # a refused call is part of the behaviour too
                out = f"error: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
            print(f"{name:10s} {label:28s} {out}", flush=True)


if __name__ == "__main__":
    main()
