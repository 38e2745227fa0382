"""The real ImageNet EfficientNet-Lite0 at 30 % channels: how often does it still agree?

No fine-tuning (none is possible offline without ImageNet): this measures what each
importance criterion keeps of the dense model's decisions on scikit-image's photos (4
photos x 6 crops/flips). Top-1 agreement = the pruned model's top-1 class equals the dense
model's; top-5 = the dense top-1 is in the pruned top-5. Calibrated criteria see other
photos (CALIBRATION_PHOTOS), never the evaluated ones.

`--recover-ratios`: at each ratio, L2 channel pruning with and without calibration-only
recovery (pk.prune_structured(recover=True): least-squares re-fit of every layer that lost
inputs), fitted on NATURAL_PHOTOS (14 other photos x 6 views), never the evaluated ones. Usage:

    python benchmarks/pretrained_agreement.py [--ratio 0.3] [--recover-ratios 0.1,0.2,0.3] [--json out.json]
"""
import argparse
import copy
import json
import time

import torch

import prunekit as pk
from prunekit.zoo import pretrained

CRITERIA = ("l2", "l1", "fpgm", "lamp", "activation_mean", "apoz", "random")


def agreement(dense_logits, logits):
    top1 = (logits.argmax(1) == dense_logits.argmax(1)).float().mean().item()
    top5 = (logits.topk(5, 1).indices == dense_logits.argmax(1, keepdim=True)).any(1).float().mean().item()
    return top1, top5


def fit_bound(model, photos, calibration, ratio):
    """Per re-fitted layer at `ratio`: the relative output error on the evaluated photos of the
    kept weights as sliced and of the best least-squares re-fit, both fed the DENSE model's own
    inputs (kept channels). What no layer-wise recovery can beat, layer by layer."""
    from prunekit.structured import recover
    pruned = copy.deepcopy(model)
    result = pk.prune_structured(pruned, photos[:1], ratio=ratio, importance="l2", seed=0)
    rows = []
    for name, cut in result.removed.items():
        module = model.get_submodule(name)
        if not cut.get("in") or not recover._refittable(module) or isinstance(module, torch.nn.Linear):
            continue
        kept_in = [i for i in range(module.weight.shape[1]) if i not in set(cut["in"])]
        kept_out = [i for i in range(module.weight.shape[0]) if i not in set(cut.get("out", []))]

        def data(batches):
            x = torch.cat([recover._rows(module, a) for a in recover._capture(model, module, batches, "in")])
            y = torch.cat([recover._targets(module, b) for b in recover._capture(model, module, batches, "out")])
            return x[:, kept_in].double(), y[:, kept_out].double()
        (xc, yc), (xe, ye) = data(calibration), data([photos])
        sliced = module.weight.detach().reshape(module.weight.shape[0], -1)[kept_out][:, kept_in].double()
        weight, _ = recover._solve(*recover._subsample(xc, yc), bias=False)
        rows.append({"layer": name, "inputs_kept": len(kept_in), "inputs": module.weight.shape[1],
                     "sliced_error": float((xe @ sliced.t() - ye).norm() / ye.norm()),
                     "refit_error": float((xe @ weight.t() - ye).norm() / ye.norm())})
    return rows


def recovery_rows(model, photos, dense, calibration, ratios):
    """L2 at each ratio, without and with the least-squares recovery fitted on `calibration`."""
    rows = []
    for ratio in ratios:
        for recover in (False, True):
            pruned = copy.deepcopy(model)
            start = time.perf_counter()
            result = pk.prune_structured(pruned, photos[:1], ratio=ratio, importance="l2", calibration=calibration,
                                         recover=recover, seed=0)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                top1, top5 = agreement(dense, pruned(photos))
            rows.append({"ratio": ratio, "recover": recover, "params_before": result.params_before,
                         "params_after": result.params_after, "top1_agreement": top1, "top5_contains_top1": top5,
                         "layers_refitted": len(result.recovered), "seconds": seconds})
            print(f"l2 at {ratio:.0%}, recover={recover!s:<5} | top-1 agree {top1:.3f} | top-5 {top5:.3f} | "
                  f"{len(result.recovered)} layers re-fitted, {seconds:.0f} s", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--recover-ratios", default="0.1,0.2,0.3", help="empty: no recovery rows")
    parser.add_argument("--json")
    args = parser.parse_args()
    model = pretrained.efficientnet_lite0()
    photos = pretrained.photo_batch(model)
    calibration = [pretrained.photo_batch(model, pretrained.CALIBRATION_PHOTOS)]
    with torch.no_grad():
        dense = model(photos)
    rows = []
    print(f"EfficientNet-Lite0 (ImageNet), {args.ratio:.0%} of channels removed, no fine-tuning, "
          f"{len(photos)} views of {len(pretrained.PHOTOS)} photos")
    print(f"{'importance':>16} | {'params':>13} | top-1 agree | dense top-1 in top-5")
    for importance in CRITERIA:
        pruned = copy.deepcopy(model)
        result = pk.prune_structured(pruned, photos[:1], ratio=args.ratio, importance=importance,
                                     calibration=calibration, seed=0)
        with torch.no_grad():
            top1, top5 = agreement(dense, pruned(photos))
        rows.append({"importance": importance, "params_before": result.params_before,
                     "params_after": result.params_after, "top1_agreement": top1, "top5_contains_top1": top5})
        print(f"{importance:>16} | {result.params_before / 1e6:.2f}M->{result.params_after / 1e6:.2f}M | "
              f"{top1:11.3f} | {top5:.3f}")
    ratios = [float(r) for r in args.recover_ratios.split(",") if r]
    natural = list(pretrained.photo_batch(model, pretrained.NATURAL_PHOTOS).split(21)) if ratios else []
    recovery = recovery_rows(model, photos, dense, natural, ratios)
    bound = fit_bound(model, photos, natural, max(ratios)) if ratios else []
    if bound:
        errors = sorted(r["refit_error"] for r in bound)
        print(f"at {max(ratios):.0%}, fed the dense inputs: best re-fit error per layer median "
              f"{errors[len(errors) // 2]:.3f} (sliced {sorted(r['sliced_error'] for r in bound)[len(errors) // 2]:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ratio": args.ratio, "views": len(photos), "rows": rows, "recovery": recovery, "fit_bound": bound,
                       "recovery_calibration": {"photos": list(pretrained.NATURAL_PHOTOS), "views": 6}}, f, indent=2)


if __name__ == "__main__":
    main()
