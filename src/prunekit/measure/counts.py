"""Parameter / nonzero counts and the bytes of the model saved as safetensors."""
import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from prunekit.serialization import codecs
from prunekit.targets import (
    effective_state,
    effective_tensors,
    prunable_modules,
    prunable_weights,
    tied_names,
)


def _nonzeros(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t)) if t.numel() else 0


@torch.no_grad()
def count_params(model: nn.Module) -> dict:
    """params, prunable_params, nonzeros, params_nonzero, sparsity (of prunable weights)."""
    params = params_nonzero = 0
    seen = set()
    for _, tensor, is_param, identity in effective_tensors(model):
        if not is_param or id(identity) in seen:
            continue
        seen.add(id(identity))
        params += tensor.numel()
        params_nonzero += _nonzeros(tensor)
    prunable = nonzeros = 0
    for _, module in prunable_weights(model):
        weight = module.weight
        prunable += weight.numel()
        nonzeros += _nonzeros(weight)
    sparsity = 1.0 - nonzeros / prunable if prunable else 0.0
    return {"params": params, "prunable_params": prunable, "nonzeros": nonzeros,
            "params_nonzero": params_nonzero, "sparsity": sparsity}


@torch.no_grad()
def sizes(model: nn.Module) -> dict:
    """size_bytes of the dense safetensors file, and size_bytes_compressed where every
    prunable weight is stored in its smallest form (bitmask, CSR-16/32, delta8, packed N:M, dense;
    serialization.codecs, as pk.save(format="compressed") chooses): the weights as
    deployed (masks baked in, as after make_permanent). pk.save of a model still masked also
    writes its masks, one byte per weight of a dense-stored masked tensor."""
    state = effective_state(model)
    for name in tied_names(model, state):  # pk.save writes a tied weight once
        del state[name]
    dense = len(safetensors_save(state))
    prunable = {f"{name}.weight" if name else "weight" for name, _ in prunable_modules(model)}
    for key in prunable & set(state):
        coded = codecs.encode(state[key])
        if coded is not None:
            del state[key]
            state.update({f"{key}.__{part}": value.contiguous() for part, value in coded[1].items()})
    compressed = len(safetensors_save(state))
    return {"size_bytes": dense, "size_bytes_compressed": compressed}
