"""The Ultralytics side of structured_coverage.py: YOLO models built from their configs (no
weights, no download), how they are fed, and what Torch-Pruning's YOLOv8 example leaves alone.

Models: the nano config of each family and task Ultralytics 8.4 ships (YOLOv5u, YOLOv8 detect /
seg / pose / obb / cls, YOLOv10, YOLO11 detect / seg / pose / obb / cls), named
"ultralytics:<config>", 80 classes (1000 for cls), torch.manual_seed(0), eval mode.
Input: 1x3x320x320 (cls: 224).
"""
PREFIX = "ultralytics:"
CONFIGS = ("yolov5nu.yaml", "yolov8n.yaml", "yolov8n-seg.yaml", "yolov8n-pose.yaml", "yolov8n-obb.yaml",
           "yolov8n-cls.yaml", "yolov10n.yaml", "yolo11n.yaml", "yolo11n-seg.yaml", "yolo11n-pose.yaml",
           "yolo11n-obb.yaml", "yolo11n-cls.yaml")


def names():
    return [PREFIX + config for config in CONFIGS]


def is_yolo(name):
    return name.startswith(PREFIX)


def build(name):
    import torch

    from prunekit.serialization.sources import load_model
    torch.manual_seed(0)
    return load_model(name).eval()


def example_input(name, batch=1):
    import torch
    size = 224 if name.endswith("-cls.yaml") else 320
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def tp_ignored_layers(model):
    """Torch-Pruning's YOLOv8 example (examples/yolov8/yolov8_pruning.py) ignores the whole
    head (its Detect module; here the last module of any task). It also swaps C2f for its own
    C2f_v2 first; this benchmark gives both tools the stock model."""
    return [model.model[-1]]
