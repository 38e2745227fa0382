"""Files and buffers as an attacker or a damaged disk gives them: every damaged compressed form,
plan or sparse-layer buffer is one PruneError naming what is wrong, never a crash, a raw torch
error or a silently wrong weight; a refused load leaves the model as it was. Sparse layers
survive dtype conversions, copies and pickling."""
import copy
import io
import json
import pickle
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import prunekit as pk
from prunekit import PruneError
from prunekit.deploy import SparseLinear, apply_kernels, build
from prunekit.deploy.kernels import KERNELS
from prunekit.serialization import codecs

needs_kernels = pytest.mark.skipif(not build.available(), reason="no C compiler for prunekit's own kernels")


def sparse(rows=12, width=40, sparsity=0.9, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, width, generator=g)
    w[torch.rand(rows, width, generator=g) < sparsity] = 0
    return w


def nm(rows=12, width=64, n=1, m=8, seed=0):
    w = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed)).view(rows, -1, m)
    return w.scatter(-1, w.abs().argsort(-1)[..., :m - n], 0.0).view(rows, width)


def stored(form, weight):
    """The tensors pk.save stores for `weight` in `form`."""
    return codecs._candidates(weight)[form]


# (form, damage, what the message says): each was a crash, a raw error or a wrong weight
DAMAGE = [
    ("csr32", lambda p: p["rowptr"].__setitem__(-1, p["rowptr"][-1] + 50), "end at"),
    ("csr32", lambda p: p["rowptr"].__setitem__(3, 10**6), "decrease"),
    ("csr32", lambda p: p.update(values=p["values"][:-3]), "column indices for"),
    ("csr32", lambda p: p["cols"].__setitem__(0, 40), "outside the row"),
    ("csr32", lambda p: p["cols"].__setitem__(0, -1), "outside the row"),
    ("csr16", lambda p: p["cols"].__setitem__(1, p["cols"][0]), "increase"),
    ("csr16", lambda p: p.update(cols=p["cols"].to(torch.int32)), "column indices are int32"),
    ("delta8", lambda p: p["deltas"].__setitem__(0, 255), "past the row"),
    ("delta8", lambda p: p["rowptr"].__setitem__(1, -5), "decrease"),
    ("nm", lambda p: p["positions"].__setitem__((0, 0), 0xFF), "outside its group"),
    ("nm", lambda p: p["nm"].copy_(torch.tensor([1, 16])), "not [12, 4]"),
    ("nm", lambda p: p["nm"].copy_(torch.tensor([0, 8])), "1 <= n < m <= 16"),
    ("nm", lambda p: p["nm"].copy_(torch.tensor([1, 0])), "1 <= n < m <= 16"),
    ("bitmask", lambda p: p.update(values=p["values"][:-1]), "marks"),
    ("bitmask", lambda p: p.update(bitmask=p["bitmask"][:-1]), "bytes for"),
    ("bitmask", lambda p: p.pop("bitmask"), "parts are"),
]


@pytest.mark.parametrize("form,damage,says", DAMAGE)
def test_every_damaged_form_is_refused_before_torch_reads_it(form, damage, says):
    weight = nm() if form == "nm" else sparse(width=40)
    parts = {k: v.clone() for k, v in stored(form, weight).items()}
    assert torch.equal(codecs.decode(form, parts, list(weight.shape)), weight)  # intact, it decodes exactly
    damage(parts)
    with pytest.raises(PruneError, match=re.escape(says)):
        codecs.decode(form, parts, list(weight.shape))


def test_an_int8_form_with_wrong_scales_is_refused():
    weight = sparse()
    form, parts = codecs.encode(weight, int8=True)
    parts["scale"] = parts["scale"][:-1]
    with pytest.raises(PruneError, match="int8"):
        codecs.decode(form, parts, list(weight.shape))


def rewrite(path, edit_tensors=None, edit_plan=None):
    with safe_open(str(path), framework="pt") as f:
        plan = json.loads(f.metadata()["prunekit"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_plan:
        edit_plan(plan)
    save_file(tensors, str(path), metadata={"prunekit": json.dumps(plan)})


@pytest.fixture
def saved(tmp_path):
    model = pk.zoo.build("lenet300", in_features=64, num_classes=10)
    pk.prune_magnitude(model, 0.95, scope="layer")  # every layer keeps some weights
    return model, pk.save(model, tmp_path / "m.safetensors", format="compressed")


def part_key(path, suffix):
    with safe_open(str(path), framework="pt") as f:
        return next(k for k in f.keys() if k.endswith(suffix))


@pytest.mark.parametrize("edit,says", [
    (lambda t, k: t.__setitem__(k, t[k][:-4]), "is damaged"),
    (lambda t, k: t.__setitem__(k, t[k].flip(0)), "is damaged"),
])
def test_a_damaged_file_is_one_error_naming_file_and_tensor_and_the_model_is_untouched(saved, edit, says):
    model, path = saved
    key = part_key(path, ".__rowptr")
    rewrite(path, edit_tensors=lambda t: edit(t, key))
    fresh = pk.zoo.build("lenet300", in_features=64, num_classes=10)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(PruneError) as err:
        pk.load(path, model=fresh)
    message = str(err.value)
    assert str(path) in message and repr(key.split(".__")[0]) in message and says in message
    assert "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("edit,says", [
    (lambda p: p["shapes"].__setitem__(next(iter(p["forms"])), [2**20, 2**20]), "memory"),
    (lambda p: p["shapes"].__setitem__("net.1.bias", [-3]), "sizes"),
    (lambda p: p.__setitem__("forms", "everything"), "forms must be"),
    (lambda p: next(iter(p["forms"].values())).__setitem__("dtype", "float99"), "dtype must be"),
    (lambda p: next(iter(p["forms"].values())).__setitem__("form", "csr64"), "form must be"),
    (lambda p: p.__setitem__("kernels", {"net.1": "warp-drive"}), "unknown kernel"),
    (lambda p: p.__setitem__("kernels", {"nowhere": "csr16"}), "lacks"),
    (lambda p: p["arch"]["kwargs"].__setitem__("hidden", "x"), "cannot be built"),
])
def test_a_hand_edited_plan_is_one_error(saved, edit, says):
    _, path = saved
    rewrite(path, edit_plan=edit)
    with pytest.raises(PruneError, match=says) as err:
        pk.load(path)
    assert "\n" not in str(err.value)


def test_a_plan_whose_shape_disagrees_with_its_stored_form_is_refused(saved):
    _, path = saved
    name = next(iter(json.loads(safe_open(str(path), "pt").metadata()["prunekit"])["forms"]))

    def wider(plan):
        plan["forms"][name]["shape"][1] += 8
        plan["shapes"][name][1] += 8
    rewrite(path, edit_plan=wider)
    with pytest.raises(PruneError):
        pk.load(path)


# --- sparse layers: buffers, dtypes, copies --------------------------------------------------

def sparse_linear(kernel, weight=None):
    weight = weight if weight is not None else (nm(12, 64, 2, 4) if kernel == "nm" else sparse(12, 64, 0.8))
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer, SparseLinear.from_linear(layer, kernel)


OWN = ["csr16", "csr32", "delta8", "bitmask", "nm", "torch-csr"]


def corrupt(kernel, state):
    """One out-of-range index per form, in a state dict of the layer's buffers."""
    if kernel in ("csr16", "csr32", "torch-csr"):
        state["cols"][0] = 64
    elif kernel == "delta8":
        state["deltas"][0] = 250
    elif kernel == "bitmask":
        state["mask"][0, -1] = 0xFF  # bits the row pointers do not count
    else:
        state["positions"][0, 0] = 0x77  # position 7 in groups of 4
    return state


@needs_kernels
@pytest.mark.parametrize("kernel", OWN)
def test_load_state_dict_with_a_bad_index_is_refused_and_leaves_the_layer(kernel):
    _, layer = sparse_linear(kernel)
    x = torch.randn(3, 64)
    with torch.no_grad():
        expected = layer(x)
    bad = corrupt(kernel, {k: v.clone() for k, v in layer.state_dict().items()})
    with pytest.raises(PruneError, match="damaged"):
        layer.load_state_dict(bad)
    with torch.no_grad():
        assert torch.equal(layer(x), expected)


@needs_kernels
@pytest.mark.parametrize("kernel", OWN)
def test_a_buffer_edited_in_place_after_binding_is_checked_again(kernel):
    _, layer = sparse_linear(kernel)
    with torch.no_grad():
        layer(torch.randn(1, 64))  # bound
        corrupt(kernel, dict(layer.named_buffers()))  # in place, behind the layer's back
        with pytest.raises(PruneError, match="damaged"):
            layer(torch.randn(1, 64))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("kernel", OWN)
def test_a_dtype_conversion_after_to_sparse_computes_the_converted_dense_layer(kernel, dtype):
    dense, layer = sparse_linear(kernel)
    x = torch.randn(4, 64)
    with torch.no_grad():
        layer(x)  # bound as float32 first: the conversion must unbind it
        expected = dense.to(dtype)(x.to(dtype))
        got = layer.to(dtype)(x.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


@needs_kernels
@pytest.mark.parametrize("kernel", ["csr16", "delta8", "nm"])
def test_a_copy_computes_with_its_own_tensors_and_layers_pickle(kernel):
    _, layer = sparse_linear(kernel)
    x = torch.randn(2, 64)
    with torch.no_grad():
        before = layer(x)  # bound: a copy must not share the binding
        twin = copy.deepcopy(layer)
        twin.values.mul_(2)
        assert torch.allclose(twin(x), 2 * before - layer.bias) and torch.equal(layer(x), before)
        buffer = io.BytesIO()
        torch.save(layer, buffer)
        buffer.seek(0)
        again = torch.load(buffer, weights_only=False)
        assert torch.equal(again(x), before)
        assert torch.equal(pickle.loads(pickle.dumps(layer))(x), before)


@needs_kernels
def test_a_model_with_sparse_layers_saved_loads_its_kernels_and_a_damaged_one_is_refused(tmp_path):
    model = pk.zoo.build("lenet300", in_features=64, num_classes=10)
    pk.prune_magnitude(model, 0.9)
    x = torch.randn(2, 64)
    with torch.no_grad():
        expected = model(x)
    apply_kernels(model, {"net.1": "delta8", "net.3": "csr16"})
    path = pk.save(model, tmp_path / "k.safetensors", format="compressed")
    loaded = pk.load(path)
    assert isinstance(loaded.net[1], SparseLinear) and loaded.net[1].kernel == "delta8"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)
    assert set(KERNELS) >= {"delta8", "csr16"}
