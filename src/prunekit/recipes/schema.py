"""What a recipe may say: typed sections, every key known (a typo is an error, not a default),
one kind of run per `task`. `VERSION` is the format written today; older files are migrated
(recipes.migrate) before they are validated here.

    version: 1
    task: prune              # prune (one pipeline), compare (methods side by side) or llm
    out: runs/my-model       # outputs; the resolved recipe is written there as recipe.yaml
    data: {source: mnist}    # as --dataset
    model: {source: lenet5}  # as --model, with weights / trust_pickle
    train: {epochs: 2}       # dense training, skipped for a model with its weights
    prune: [{method: structured, sparsity: 0.5}, {method: magnitude-global, sparsity: 0.8}]
    finetune: {epochs: 1}
    evaluate: {latency_batch: 64}
    export: {format: compressed, int8: false, onnx: false}
    report: true
"""
import difflib
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from prunekit.errors import PruneError
from prunekit.experiments import methods

VERSION = 1


def _known_method(name: str) -> str:
    try:
        methods.get(name)
    except PruneError as err:
        close = difflib.get_close_matches(name, methods.list_methods(), n=1)
        raise ValueError(f"did you mean {close[0]}?" if close else str(err)) from None
    return name


Method = Annotated[str, AfterValidator(_known_method)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Data(Section):
    source: str = "mnist"
    """a built-in name, npz:FILE, folder:PATH, hf:DIR, an IDX folder"""
    image_size: int = Field(32, ge=1)
    """folder and hf images are resized to this square size"""


class Model(Section):
    source: str = ""
    """a zoo name, torchvision:NAME, timm:NAME, hf:DIR or a pk.save file; empty: the dataset's zoo model"""
    weights: str | None = None
    """a weights file: safetensors, or a state dict read with weights_only"""
    trust_pickle: bool = False
    """allow a pickled model or weights file (reading one runs code)"""


class Train(Section):
    epochs: int = Field(2, ge=1)
    """dense training epochs (none for a model with its weights)"""
    lr: float = Field(0.01, gt=0)


class Finetune(Section):
    epochs: int = Field(1, ge=0)
    lr: float = Field(0.01, gt=0)
    limit: int = Field(0, ge=0)
    """samples per epoch; 0 = all"""


class Step(Section):
    method: Method
    """a compare method: magnitude-global, structured, gradual, nm-2:4, ..."""
    sparsity: float = Field(0.5, gt=0, lt=1)
    """of the prunable weights (N:M: set by the pattern)"""


class Evaluate(Section):
    latency_batch: int = Field(64, ge=1)
    """test samples per timed batch"""
    repeats: int = Field(30, ge=1)
    """timed repeats per model (interleaved)"""
    threads: int = Field(2, ge=1)
    """torch threads while timing"""


class Export(Section):
    format: Literal["dense", "compressed"] = "compressed"
    int8: bool = False
    """kept values as int8 (compressed only)"""
    onnx: bool = False
    """also model.onnx, checked against PyTorch in ONNX Runtime"""

    @model_validator(mode="after")
    def _int8_is_compressed(self):
        if self.int8 and self.format != "compressed":
            raise ValueError("int8 values are a compressed form: set format: compressed")
        return self


class Common(Section):
    version: Literal[1] = VERSION
    """the recipe format (a file without it is version 0, migrated)"""
    out: str
    """the output folder (recipe.yaml, result.json, report.html, models)"""
    seed: int = 0
    """seeds dense training, pruning ties and fine-tuning: the same seed, the same numbers"""


class PruneRecipe(Common):
    task: Literal["prune"]
    """one model through the prune steps in order, fine-tuned after each"""
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()
    prune: list[Step] = Field(min_length=1)
    """the steps, in order: each a method and a target sparsity"""
    finetune: Finetune = Finetune()
    evaluate: Evaluate = Evaluate()
    export: Export = Export()
    report: bool = True
    """write report.html and its plots"""


class Sweep(Section):
    methods: list[Method] = ["magnitude-global", "magnitude-layer", "structured", "hybrid"]
    sparsities: list[Annotated[float, Field(gt=0, lt=1)]] = [0.5, 0.8, 0.9, 0.95]


class CompareRecipe(Common):
    task: Literal["compare"]
    """every method at every sparsity, side by side (prunekit compare)"""
    data: Data = Data()
    model: Model = Model()
    train: Train = Train(epochs=6)
    compare: Sweep = Sweep()
    finetune: Finetune = Finetune()
    evaluate: Evaluate = Evaluate()
    report: bool = True
    """write report.html and its plots"""


class Calibration(Section):
    text: str | None = None
    """a text file; default: the fetched python-docs HOWTOs"""
    n: int = Field(64, ge=1)
    seq_len: int = Field(512, ge=1)


class LLMPrune(Section):
    method: Literal["wanda", "sparsegpt", "magnitude"] | None = None
    sparsity: float = Field(0.5, gt=0, lt=1)
    pattern: str | None = None
    """N:M, e.g. 2:4"""
    owl: bool = False
    """per-block sparsity by outliers (OWL) instead of uniform"""
    heads: float = Field(0.0, ge=0, lt=1)
    """structured: fraction of attention heads to remove"""
    ffn: float = Field(0.0, ge=0, lt=1)
    """structured: fraction of FFN neurons to remove"""
    layers: int = Field(0, ge=0)
    """structured: number of blocks to remove"""
    recover: bool = False
    """structured: re-fit the layers that read removed units"""


class LLMEvaluate(Section):
    text: str | None = None
    """a text file; default: the fetched python-docs Tutorial"""
    max_tokens: int | None = Field(None, ge=1)


class LLMRecipe(Common):
    task: Literal["llm"]
    """a Hugging Face language model: one-shot pruning and perplexity (prunekit llm)"""
    model: str
    """a Hugging Face folder, a .gguf file, gemma3-270m or minilm-l6"""
    calibration: Calibration = Calibration()
    prune: LLMPrune = LLMPrune()
    evaluate: LLMEvaluate | None = LLMEvaluate()


class Channels(Section):
    ratio: float = Field(gt=0, lt=1)
    """fraction of each layer's channels to remove"""
    importance: str = "l2"
    """how channels are scored (l1, l2, fpgm, lamp, random, ...)"""
    round_to: int = Field(1, ge=1)
    """keep channel counts multiples of this (8 suits most hardware)"""
    ignore: list[str] = []
    """module names (or regexes) left whole, e.g. a detection head"""


class SlimRecipe(Common):
    task: Literal["slim"]
    """channels removed with no data (no training, no accuracy): the smaller model, its outputs
    checked, measured side by side with the original, saved; for models whose training loop is
    their own (a YOLO detector: fine-tune the result with Ultralytics)"""
    model: Model
    num_classes: int | None = Field(None, ge=1)
    """classes of a model built from a name (a detector's nc)"""
    input_shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    """one sample's shape, e.g. [3, 640, 640]"""
    prune: Channels
    evaluate: Evaluate = Evaluate(latency_batch=1, repeats=10)
    export: Export = Export(format="dense")


Recipe = Annotated[Union[PruneRecipe, CompareRecipe, LLMRecipe, SlimRecipe], Field(discriminator="task")]
