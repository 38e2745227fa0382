"""Reference models, registered by name so saved files can rebuild them from data alone."""
from torch import nn

from prunekit._utils.registry import Registry
from prunekit.errors import PruneError
from prunekit.zoo import sources

MODELS = Registry("model")


def register(name: str):
    def wrap(cls):
        MODELS.add(name, cls)
        cls.zoo_name = name
        return cls
    return wrap


def list_models() -> list:
    return MODELS.names()


def build(name: str, **kwargs) -> nn.Module:
    """A fresh, untrained zoo model (kwargs: its constructor arguments), or a model from a
    source spec ("torchvision:resnet18", "timm:NAME", "hf:DIR": see zoo.sources)."""
    if sources.is_source(name):
        return sources.build(name, **kwargs)
    return MODELS.get(name)(**kwargs)


def architecture(model: nn.Module):
    """(zoo name or source spec, constructor kwargs) if `model` is a zoo model or was built from
    a source, else None."""
    if sources.source_of(model):
        return sources.source_of(model)
    name = getattr(type(model), "zoo_name", None)
    return None if MODELS.find(name) is not type(model) else (name, dict(model.config))


@register("lenet300")
class LeNet300(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998), the MLP of Han et al. 2015."""

    def __init__(self, in_features=784, num_classes=10, hidden=(300, 100)):
        super().__init__()
        self.config = {"in_features": in_features, "num_classes": num_classes, "hidden": list(hidden)}
        sizes = [in_features, *hidden]
        layers = [nn.Flatten()]
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@register("lenet5")
class LeNet5(nn.Module):
    """LeNet-5, Caffe variant: conv 20 (5x5), pool, conv 50 (5x5), pool, fc 500, fc 10."""

    def __init__(self, in_channels=1, num_classes=10, image_size=28):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:  # two 5x5 convolutions and two 2x2 pools need 16 pixels a side
            raise PruneError(f"lenet5 takes images of at least 16x16, not {image_size}x{image_size}: "
                             "use lenet300, or larger images (--image-size for a folder)")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * side * side, 500), nn.ReLU(), nn.Linear(500, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@register("smallcnn")
class SmallCNN(nn.Module):
    """A small VGG-style CNN: two blocks of two 3x3 convs (16, then 32 channels) with
    BatchNorm and ReLU, each block ending in a 2x2 max pool; fc 128, fc classes."""

    def __init__(self, in_channels=1, num_classes=10, image_size=28, widths=(16, 32), hidden=128):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size,
                       "widths": list(widths), "hidden": hidden}
        layers, channels = [], in_channels
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@register("mnistcnn")
class MnistCNN(nn.Module):
    """The CNN of PyTorch's MNIST example (examples/mnist/main.py): conv 32 (3x3), ReLU,
    conv 64 (3x3), ReLU, 2x2 max pool, dropout 0.25, fc 128, ReLU, dropout 0.5, fc classes."""

    def __init__(self, in_channels=1, num_classes=10, image_size=28):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        side = (image_size - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@register("resnet8")
class ResNet8(nn.Module):
    """The CIFAR ResNet of He et al. 2016 with one basic block per stage (6n + 2 layers, n = 1):
    conv 16, blocks of 16, 32 and 64 channels (the last two at stride 2), global average pool,
    fc classes. Residual adds couple each stage's channels."""

    def __init__(self, in_channels=1, num_classes=10, widths=(16, 32, 64)):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "widths": list(widths)}
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        from torchvision.models.resnet import BasicBlock  # here: `import prunekit` stays torchvision-free
        blocks, channels = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            block = BasicBlock(channels, width, stride)
            if stride != 1 or channels != width:  # made after the block: the same random draws, in order
                block.downsample = nn.Sequential(nn.Conv2d(channels, width, 1, stride, bias=False),
                                                 nn.BatchNorm2d(width))
            blocks.append(block)
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x):
        return self.classifier(self.blocks(self.stem(x)))


@register("mlp1d")
class MLP1D(LeNet300):
    """MLP for MNIST-1D (40 features): 40-500-500-10 as in Greydanus & Kobak's lottery notebook."""

    def __init__(self, in_features=40, num_classes=10, hidden=(500, 500)):
        super().__init__(in_features, num_classes, hidden)


DEFAULT_FOR_DATASET = {"mnist": "lenet5", "fashion-mnist": "lenet5", "mnist1d": "mlp1d", "digits": "lenet300"}
