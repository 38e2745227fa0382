"""A seeded mutation fuzzer for everything prunekit reads that a user or a file can craft: the
compressed forms (codecs.decode), whole pk.save files (pk.load) and sparse-kernel layers' buffers
(SparseLinear.load_state_dict, in-place edits, then forward).

A case is named by (campaign seed, index): random.Random("seed:index") picks the target, the
seed input and one to three mutations, so any case replays alone (tests/fuzz_runner.py runs
cases in child processes, so a crash kills only its worker). Each target has an oracle:
  decode: a PruneError, or exactly the tensor the reference decoder (fuzz_reference.py) gives;
  load:   a PruneError, or a model whose forward runs, whose every compressed or stored weight is
          what the reference decodes from the file, and whose sparse layers compute
          F.linear(x, weight the reference decodes from their buffers, bias);
  layer:  a PruneError (or torch's own load_state_dict refusal of a wrong size or name) at load
          or at forward, or that same F.linear at batch 1 and batch 12 (the tiled path).
Anything else is a finding: "wrong" (accepted what has no meaning, or computed other values)
or "unexpected" (an exception that is not a PruneError).
"""
import copy
import json
import math
import random
import struct
import warnings

import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load, save as st_save

import fuzz_reference as ref
import fuzz_seeds
from prunekit import PruneError
import prunekit as pk
from prunekit.deploy import SparseLinear
from prunekit.deploy.sparse_layer import SparseLayer
from prunekit.serialization import codecs

TARGETS = {"decode": 5, "layer": 3, "load": 2}  # relative frequency: load cases cost the most
INT_EDGES = (0, -1, 1, 255, 256, 2**15 - 1, 2**15, 2**16 - 1, 2**16, 2**31 - 1, -2**31, 2**63 - 1)
FLOAT_EDGES = (0.0, -0.0, 1.0, -1.0, 1e-30, 1e4, math.nan, math.inf, -math.inf)
DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32,
          torch.float64, torch.bool)
PART_NAMES = ("values", "values_int8", "scale", "rowptr", "cols", "deltas", "bitmask", "mask", "positions",
              "nm", "shape", "bias", "junk")


# ---- mutators -------------------------------------------------------------------------------

def _as(value, dtype) -> torch.Tensor:
    """`value` stored in `dtype` as a file would hold it: integers wrap, floats round."""
    if dtype.is_floating_point:
        return torch.tensor(float(value), dtype=torch.float64).to(dtype)
    if dtype == torch.bool:
        return torch.tensor(bool(value))
    if isinstance(value, float):
        value = 0 if not math.isfinite(value) else int(value)
    value = (int(value) + 2**63) % 2**64 - 2**63  # into int64, wrapping
    return torch.tensor(value, dtype=torch.int64).to(dtype)


def _edge(rng, dtype, ints):
    if dtype.is_floating_point:
        return rng.choice(FLOAT_EDGES + (rng.uniform(-3, 3),))
    return rng.choice(INT_EDGES + tuple(ints) + (rng.randrange(-300, 70000),))


def _element(rng, t, op, ints):
    flat = t.reshape(-1).clone()
    i = rng.randrange(flat.numel())
    if op == "set":
        value = _edge(rng, t.dtype, ints)
        flat[i] = _as(value, t.dtype)
        what = f"[{i}]={value}"
    elif op == "bump":
        step = rng.choice((-1, 1, 2, -2))
        flat[i] = _as(flat[i].item() + step, t.dtype)
        what = f"[{i}]+={step}"
    elif op == "flip":
        raw = flat.view(torch.uint8) if flat.dim() else flat.reshape(1).view(torch.uint8)
        byte, bit = rng.randrange(raw.numel()), rng.randrange(8)
        raw[byte] ^= 1 << bit
        what = f" byte {byte} bit {bit}"
    else:
        j = rng.randrange(flat.numel())
        flat[i], flat[j] = flat[j].clone(), flat[i].clone()
        what = f"[{i}]<->[{j}]"
    return flat.reshape(t.shape), what


def _resize(rng, t, grow, ints):
    """One row, column or element cut off or added (with an edge value or a copy)."""
    if t.dim() == 0:
        return (t.reshape(1).repeat(2) if grow else t.reshape(0)), "to 1-D"
    dim = rng.randrange(t.dim())
    if not grow:
        keep = max(0, t.shape[dim] - rng.choice((1, 1, 2, t.shape[dim])))
        return t.narrow(dim, rng.choice((0, t.shape[dim] - keep)), keep).clone(), f"dim {dim} to {keep}"
    shape = list(t.shape)
    shape[dim] = rng.choice((1, 1, 3))
    extra = torch.full(shape, 0, dtype=t.dtype)
    if extra.numel():
        extra.fill_(_as(_edge(rng, t.dtype, ints), t.dtype).item())
    return torch.cat([t, extra], dim), f"dim {dim} +{shape[dim]}"


def mutate_tensor(rng, t, ints, shape_ops=True):
    """(new tensor, what was done) for one tensor."""
    ops = ["set"] * 5 + ["bump"] * 2 + ["flip"] * 3 + ["swap"]
    if shape_ops:
        ops += ["truncate", "extend", "cast", "reshape"]
    op = rng.choice(ops)
    if op in ("set", "bump", "flip", "swap"):
        if t.numel() == 0:
            op = "extend"
        else:
            new, what = _element(rng, t, op, ints)
            return new, op + what
    if op in ("truncate", "extend"):
        new, what = _resize(rng, t, op == "extend", ints)
        return new, f"{op} {what}"
    if op == "cast":
        dtype = rng.choice([d for d in DTYPES if d != t.dtype])
        return t.to(dtype), f"cast to {str(dtype)[6:]}"
    new = t.reshape(1, -1) if t.dim() != 2 or rng.random() < 0.3 else t.reshape(-1)
    return new, f"reshape to {list(new.shape)}"


def mutate_parts(rng, parts: dict, ints, shape_ops=True) -> str:
    """One mutation of a dict of tensors (a form's parts, a state dict, a file), in place."""
    keys = sorted(parts)
    roll = rng.random()
    if shape_ops and roll < 0.04 and keys:
        key = rng.choice(keys)
        del parts[key]
        return f"drop {key}"
    if shape_ops and roll < 0.08 and keys:
        key, name = rng.choice(keys), rng.choice(PART_NAMES)
        new = key.rpartition(".__")[0] + ".__" + name if ".__" in key else name
        parts[new] = parts.pop(key)
        return f"rename {key} -> {new}"
    if shape_ops and (roll < 0.11 or not keys):
        name = rng.choice(PART_NAMES)
        parts[name] = parts[rng.choice(keys)].clone() if keys and rng.random() < 0.5 else torch.arange(3)
        return f"add {name}"
    key = rng.choice(keys)
    if rng.random() < 0.08 and shape_ops and parts[key].numel() > 1:  # same values, strided
        parts[key] = torch.stack([parts[key], parts[key]], -1)[..., 0]
        return f"{key}: strided"
    parts[key], what = mutate_tensor(rng, parts[key], ints, shape_ops)
    return f"{key}: {what}"


def _sizes(*numbers):
    out = set()
    for n in numbers:
        out |= {n - 1, n, n + 1}
    return sorted(out)


def mutate_shape(rng, shape) -> str:
    i = rng.randrange(len(shape)) if shape else 0
    op = rng.choice(("set", "drop", "add") if shape else ("add",))
    if op == "set":
        shape[i] = rng.choice((0, 1, max(0, shape[i] - 1), shape[i] + 1, shape[i] * 2, 64, 4096))
    elif op == "drop":
        shape.pop(i)
    else:
        shape.insert(i, rng.choice((1, 2)))
    return f"shape -> {shape}"


def _nodes(node, path=()):
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _nodes(value, path + (key,))


DOMAIN = {"form": codecs.FORMS + ("dense", "csr64", ""), "dtype": ("float16", "bfloat16", "float64", "int8", "bool",
          "float128"), "format": ("dense", "compressed", "sparse"),
          "name": ("lenet300", "lenet5", "mlp1d", "resnet8", "nope")}
KERNEL_NAMES = ("csr16", "csr32", "delta8", "bitmask", "nm", "torch-csr", "dense", "nm/1t", "dense/1t", "nope")
MODULES = ("net.1", "net.3", "net.5", "net.0", "net.2", "", "net", "net.9")


def mutate_plan(rng, plan: dict) -> str:
    """One edit of the JSON plan: a value of another type, a number moved to an edge, a key
    deleted or added, a name (form, dtype, kernel, architecture) replaced."""
    if rng.random() < 0.12 and isinstance(plan.get("kernels", {}), dict):
        module, kernel = rng.choice(MODULES), rng.choice(KERNEL_NAMES)
        plan.setdefault("kernels", {})[module] = kernel
        return f"kernels[{module!r}] = {kernel!r}"
    path, value = rng.choice(list(_nodes(plan))[1:])
    parent = plan
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    roll = rng.random()
    if roll < 0.12 and isinstance(parent, dict):
        del parent[key]
        return f"delete {list(path)}"
    if roll < 0.2 and isinstance(parent, dict):
        parent[rng.choice(("net.9.weight", "x", key + "x"))] = copy.deepcopy(value)
        return f"add a key beside {list(path)}"
    if isinstance(value, bool) or value is None or roll < 0.35:
        new = rng.choice((None, "x", [], {}, -1, 2**63, 1.5, True, [1, 2], {"form": "csr16"}))
    elif isinstance(value, (int, float)):
        new = rng.choice((value + 1, value - 1, 0, -value, -1, 2**31, 2**40, value * 2))
    elif isinstance(value, str):
        new = rng.choice(DOMAIN.get(key, ()) or (KERNEL_NAMES if "kernels" in path else ("net.1", "", "x" * 3)))
    else:
        new = rng.choice(([], {}, "x", [value] if isinstance(value, list) else {}))
    parent[key] = new
    return f"{list(path)} = {json.dumps(new)[:40]}"


def mutate_bytes(rng, data: bytes) -> tuple:
    """A bit flipped in the header or the data, the file cut short, a wrong header length."""
    header = min(8 + struct.unpack("<Q", data[:8])[0], len(data)) if len(data) >= 8 else len(data)
    op = rng.choice(("flip-header", "flip-data", "truncate", "length", "append"))
    if (op.startswith("flip") and len(data) <= 8) or (op == "length" and len(data) < 8):
        op = "append"
    out = bytearray(data)
    if op == "flip-header" or (op == "flip-data" and header >= len(data)):
        i = rng.randrange(8, max(header, 9))
        out[i] ^= 1 << rng.randrange(8)
    elif op == "flip-data":
        i = rng.randrange(header, len(data))
        out[i] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        i = rng.randrange(len(data) + 1)
        out = out[:i]
    elif op == "length":
        i = rng.choice((0, 7, header - 1, header + 1, len(data), 2**63, rng.randrange(2**32)))
        out[:8] = struct.pack("<Q", i)
    else:
        i = rng.choice((1, 8, 100))
        out += bytes(rng.randrange(256) for _ in range(i))
    return bytes(out), f"bytes {op} {i}"


# ---- oracles --------------------------------------------------------------------------------

class Found(Exception):
    """The oracle's verdict on an accepted input that is wrong."""


def same(a, b) -> bool:
    """Bit-for-bit equal values (NaN equal to NaN, -0.0 to 0.0), dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan_a, nan_b = a.isnan(), b.isnan()
    return torch.equal(nan_a, nan_b) and torch.equal(a.masked_fill(nan_a, 0), b.masked_fill(nan_b, 0))


def close(y, expected) -> bool:
    """Equal within float32 summation error (the kernels add in another order than torch)."""
    if y.shape != expected.shape:
        return False
    return torch.allclose(y.double(), expected.double(), rtol=1e-4, atol=1e-4, equal_nan=True)


def _reference(decode):
    try:
        return decode()
    except ref.Invalid as err:
        return err


def _verdict(outcome, **extra):
    return {"outcome": outcome, **extra}


def decode_case(rng, seeds, note):
    key, form, parts, shape, dtype = rng.choice(seeds.decode)
    parts, shape = {k: v.clone() for k, v in parts.items()}, list(shape)
    rows, width = ref.matrix_of(shape)
    ints = _sizes(rows, width, *[t.numel() for t in parts.values()])
    done = [mutate_shape(rng, shape) if rng.random() < 0.08 else mutate_parts(rng, parts, ints)
            for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    note.update(key=key, done=done, inputs={"parts": parts, "form": form, "shape": shape, "dtype": str(dtype)[6:]})
    expected = _reference(lambda: ref.checkpoint(form, parts, shape, dtype))
    try:
        got = codecs.decode(form, parts, shape, dtype)
    except PruneError as err:
        return _verdict("refused", valid=not isinstance(expected, ref.Invalid), why=str(err))
    if isinstance(expected, ref.Invalid):
        raise Found(f"decoded what the reference calls invalid ({expected})")
    if not same(got, expected):
        raise Found(f"decoded {got.dtype} {list(got.shape)} unlike the reference's {expected.dtype} "
                    f"{list(expected.shape)} or its values")
    return _verdict("equal")


def _inputs(rng, width):
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    return [torch.randn(batch, width, generator=g) for batch in (1, 12)]  # 12: the kernels' tiles


def _check_layer(layer, xs):
    """A sparse layer computes F.linear with the weight the reference decodes from its buffers;
    a PruneError from forward is a refusal (returned as such)."""
    rows, width = layer.matrix_shape()
    for x in xs:
        try:
            with torch.no_grad():
                y = layer(x)
        except PruneError as err:
            return err
        weight = _reference(lambda: ref.kernel(layer.kernel.partition("/")[0], layer.parts(), rows, width))
        if isinstance(weight, ref.Invalid):
            raise Found(f"batch {x.shape[0]}: ran buffers the reference calls invalid ({weight})")
        if layer.bias is not None and layer.bias.numel() != rows:  # a kernel reads one per row
            raise Found(f"batch {x.shape[0]}: ran with a bias of shape {list(layer.bias.shape)} for {rows} rows")
        bias = None if layer.bias is None else layer.bias.detach().reshape(-1).to(weight.dtype)
        expected = F.linear(x.to(weight.dtype), weight, bias)
        if not close(y, expected):
            raise Found(f"batch {x.shape[0]}: output differs from F.linear with the reference weight "
                        f"(max diff {(y.double() - expected.double()).abs().max().item():.3g})")
    return None


def _in_place(rng, layer, ints) -> str:
    """A buffer or the bias edited in place (or replaced) after the kernel was bound."""
    names = list(layer.part_names) + (["bias"] if layer.bias is not None else [])
    name = rng.choice(names)
    current = getattr(layer, name)
    new, what = mutate_tensor(rng, current.detach(), ints, shape_ops=rng.random() < 0.3)
    with torch.no_grad():
        if new.shape == current.shape and new.dtype == current.dtype:
            current.copy_(new)
            return f"in place {name}: {what}"
    setattr(layer, name, new if name != "bias" else torch.nn.Parameter(new, requires_grad=False))
    return f"replaced {name}: {what}"


def layer_case(rng, seeds, note):
    key, kernel, linear = rng.choice(seeds.layers)
    layer = SparseLinear.from_linear(linear, kernel)
    rows, width = layer.matrix_shape()
    ints = _sizes(rows, width, *[t.numel() for t in layer.parts().values()])
    xs = _inputs(rng, width)
    count = rng.choice((1, 1, 1, 2, 3))
    if rng.random() < 0.25:
        with torch.no_grad():
            layer(xs[0])  # bound: the edits must make it check again
        done = []
        note.update(key=key, done=done, inputs={"kernel": kernel, "state": layer.state_dict(), "in_place": True})
        done += [_in_place(rng, layer, ints) for _ in range(count)]
    else:
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        done = [mutate_parts(rng, state, ints) for _ in range(count)]
        strict, assign = rng.random() < 0.8, rng.random() < 0.5
        done.append(f"load_state_dict(strict={strict}, assign={assign})")
        note.update(key=key, done=done, inputs={"kernel": kernel, "state": state, "in_place": False})
        try:
            layer.load_state_dict(state, strict=strict, assign=assign)
        except PruneError as err:
            return _verdict("refused", why=str(err))
        except RuntimeError as err:
            if "Error(s) in loading state_dict" not in str(err):
                raise
            return _verdict("refused_torch", why=str(err)[:200])
    refused = _check_layer(layer, xs)
    if refused is not None:
        return _verdict("refused", why=str(refused))
    return _verdict("equal")


def _header(data: bytes) -> dict:
    return json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])


def mutate_file(rng, data: bytes) -> tuple:
    """(bytes, what was done): tensors or plan edited and the file written again, or raw bytes."""
    kind = rng.choice(("tensors", "tensors", "plan", "plan", "bytes"))
    try:  # a file an earlier mutation made unreadable takes byte mutations only
        tensors, meta = st_load(data), _header(data)["__metadata__"]
        plan = json.loads(meta["prunekit"])
        ints = _sizes(*[s for shape in plan["shapes"].values() for s in shape])
    except Exception:  # noqa: BLE001 - any damage
        kind = "bytes"
    if kind == "bytes" or not isinstance(plan, dict):
        return mutate_bytes(rng, data)
    if kind == "tensors":
        what = mutate_parts(rng, tensors, ints)
    else:
        what = mutate_plan(rng, plan)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return st_save(tensors, {**meta, "prunekit": json.dumps(plan)}), what


def _file_weights(tensors, plan) -> dict:
    """{name: effective tensor} the reference reads from a file: stored or decoded, times its mask."""
    out = {k: v for k, v in tensors.items() if ".__" not in k}
    for name, form in plan.get("forms", {}).items():
        prefix = name + ".__"
        parts = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and k != prefix + "mask"}
        out[name] = ref.checkpoint(form["form"], parts, form["shape"], getattr(torch, form["dtype"]))
    for name in list(out):
        mask = tensors.get(name + ".__mask")
        if mask is not None:
            keep = mask.to(torch.uint8) != 0 if mask.dtype != torch.bool else mask.view(torch.uint8) != 0
            out[name] = torch.where(keep, out[name], torch.zeros((), dtype=out[name].dtype))
    return out


def _check_model(model, data, rng):
    """The loaded model holds what the reference reads from the file, runs, and its sparse
    layers compute what their buffers mean. Returns a PruneError raised by forward, or None."""
    tensors, plan = st_load(data), json.loads(_header(data)["__metadata__"]["prunekit"])
    expected = _reference(lambda: _file_weights(tensors, plan))
    if isinstance(expected, ref.Invalid):
        raise Found(f"loaded a file whose forms the reference calls invalid ({expected})")
    modules = dict(model.named_modules())
    for name, want in expected.items():
        module_name, _, tensor_name = name.rpartition(".")
        module = modules[module_name]
        got = module.dense_weight().reshape(want.shape) if isinstance(module, SparseLayer) and tensor_name == "weight" \
            else getattr(module, tensor_name).detach()
        if not same(got, want):
            masked_nan = got.dtype == want.dtype and got.shape == want.shape and same(
                got.masked_fill((want == 0) & ~got.isfinite(), 0), want)
            raise Found(f"{name}: NaN or inf at a masked-out position" if masked_nan else
                        f"{name} loaded unlike the reference's reading of the file")
    for name, module in modules.items():  # the plan's attrs set these: they must be the weight's
        weight = module.weight if isinstance(module, torch.nn.Linear) else \
            module.dense_weight() if isinstance(module, SparseLinear) else None
        if weight is not None and [module.out_features, module.in_features] != list(weight.shape):
            raise Found(f"{name} says {module.in_features} -> {module.out_features}, its weight is "
                        f"{list(weight.shape)}")
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Linear, SparseLinear)))
    xs = _inputs(rng, min(first.in_features, 1 << 16))
    try:
        with torch.no_grad():
            for x in xs:
                model(x)
    except PruneError as err:
        return err
    for module in model.modules():
        if isinstance(module, SparseLayer):
            refused = _check_layer(module, _inputs(rng, module.matrix_shape()[1]))
            if refused is not None:
                return refused
    return None


def load_case(rng, seeds, note):
    key = rng.choice(sorted(seeds.files))
    data, done = seeds.files[key], []
    note.update(key=key, done=done)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data, what = mutate_file(rng, data)
        done.append(what)
        if len(data) < 8:
            break
    path = seeds.folder / "case.safetensors"
    path.write_bytes(data)
    note["inputs"] = {"file": data}
    try:
        model = pk.load(path)
    except PruneError as err:
        return _verdict("refused", why=str(err)[:300])
    refused = _check_model(model, data, rng)
    if refused is not None:
        return _verdict("refused", why=str(refused)[:300])
    return _verdict("equal")


CASES = {"decode": decode_case, "layer": layer_case, "load": load_case}


def pick(seed, index):
    """The random source and target of case `index` of campaign `seed`."""
    rng = random.Random(f"{seed}:{index}")
    return rng, rng.choices(list(TARGETS), weights=list(TARGETS.values()))[0]


def run_case(seed, index, seeds, keep=None) -> dict:
    """One case's verdict: refused, refused_torch, equal, wrong or unexpected (with the error),
    its seed input (key) and mutations (done); `keep(inputs)` gets the mutated input (to save it)."""
    rng, target = pick(seed, index)
    note = {"key": None, "done": [], "inputs": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verdict = CASES[target](rng, seeds, note)
    except Found as err:
        verdict = {"outcome": "wrong", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - every other exception is what the fuzzer looks for
        verdict = {"outcome": "unexpected", "error": f"{type(err).__name__}: {err}"[:400]}
    if keep and note["inputs"] is not None:
        keep(note["inputs"])
    return {"index": index, "target": target, "key": note["key"], "done": list(note["done"]), **verdict}
