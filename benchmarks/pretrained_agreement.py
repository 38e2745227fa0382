"""The real ImageNet EfficientNet-Lite0 at 30 % channels: how often does it still agree?

No fine-tuning (none is possible offline without ImageNet): this measures what each
importance criterion keeps of the dense model's decisions on scikit-image's photos (4
photos x 6 crops/flips). Top-1 agreement = the pruned model's top-1 class equals the dense
model's; top-5 = the dense top-1 is in the pruned top-5. Calibrated criteria see other
photos (CALIBRATION_PHOTOS), never the evaluated ones. Usage:

    python benchmarks/pretrained_agreement.py [--ratio 0.3] [--json out.json]
"""
import argparse
import copy
import json

import torch

import prunekit as pk
from prunekit.zoo import pretrained

CRITERIA = ("l2", "l1", "fpgm", "lamp", "activation_mean", "apoz", "random")


def agreement(dense_logits, logits):
    top1 = (logits.argmax(1) == dense_logits.argmax(1)).float().mean().item()
    top5 = (logits.topk(5, 1).indices == dense_logits.argmax(1, keepdim=True)).any(1).float().mean().item()
    return top1, top5


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ratio": args.ratio, "views": len(photos), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
