"""Sparse forms and kernels: every form is exact, every kernel computes what F.linear computes,
on odd shapes, empty rows, 0 % and 100 % sparse weights, at batch 1 and past the batch tile."""
import pytest
import torch
import torch.nn.functional as F

from prunekit import PruneError
from prunekit.deploy import build, formats
from prunekit.deploy.kernels import KERNELS

pytestmark = pytest.mark.skipif(not build.available(), reason="no C compiler for prunekit's own kernels")


def sparse_weight(rows, width, sparsity, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, width, generator=g)
    w[torch.rand(rows, width, generator=g) < sparsity] = 0
    return w


def nm_weight(rows, width, n, m, seed=0):
    w = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    groups = w.view(rows, -1, m)
    drop = groups.abs().argsort(-1)[..., :m - n]
    return groups.scatter(-1, drop, 0.0).view(rows, width)


WEIGHTS = {
    "odd": sparse_weight(7, 13, 0.6),
    "empty-rows": sparse_weight(33, 100, 0.9).index_fill_(0, torch.tensor([0, 5, 32]), 0.0),
    "dense": sparse_weight(17, 40, 0.0),
    "all-zero": torch.zeros(9, 24),
    "wide": sparse_weight(3, 70000, 0.95),
    "2:4": nm_weight(19, 64, 2, 4),
    "4:8": nm_weight(5, 48, 4, 8),
    "1:4-ragged": nm_weight(6, 12, 1, 4).index_fill_(1, torch.tensor([3]), 0.0),
}


@pytest.mark.parametrize("case", WEIGHTS)
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("batch", [1, 3, 70])
@pytest.mark.parametrize("bias", [False, True])
def test_every_kernel_computes_the_dense_result(case, kernel, batch, bias):
    w = WEIGHTS[case]
    if not KERNELS[kernel].fits(w):
        assert kernel in ("csr16", "nm")  # 16-bit indices need rows <= 65536; nm needs the pattern
        return
    b = torch.randn(w.shape[0]) if bias else None
    x = torch.randn(batch, w.shape[1])
    parts = KERNELS[kernel].pack(w)
    exact = F.linear(x.double(), w.double(), None if b is None else b.double())
    scale = float((x.abs() @ w.abs().t()).max()) + 1  # float32 rounding grows with the sum's terms
    torch.testing.assert_close(KERNELS[kernel].run(parts, x, b).double(), exact, rtol=0, atol=1e-6 * scale)
    assert torch.equal(KERNELS[kernel].dense(parts), w)  # the form holds the weight exactly


def test_nm_kernels_only_take_weights_with_the_pattern():
    assert KERNELS["nm"].fits(WEIGHTS["2:4"]) and not KERNELS["nm"].fits(WEIGHTS["odd"])
    assert formats.fits_nm(WEIGHTS["2:4"], 2, 4) and not formats.fits_nm(sparse_weight(4, 16, 0.3), 2, 4)
    with pytest.raises(PruneError, match="does not fit 2:4"):
        formats.to_nm(sparse_weight(4, 16, 0.3), 2, 4)


def test_sixteen_bit_indices_reach_the_top_of_their_range():
    w = torch.zeros(2, 65536)
    w[0, 65535], w[1, 32768], w[1, 0] = 3.0, -2.0, 1.0
    parts = formats.to_csr(w, index_bits=16)
    assert parts["cols"].dtype == torch.int16 and torch.equal(formats.csr_dense(parts), w)
    x = torch.randn(1, 65536)
    torch.testing.assert_close(KERNELS["csr16"].run(parts, x, None), x @ w.t())
    with pytest.raises(PruneError, match="16-bit"):
        formats.to_csr(torch.zeros(1, 65537), index_bits=16)


def test_form_sizes_are_what_they_say():
    w = sparse_weight(64, 256, 0.9)
    nnz = int((w != 0).sum())
    assert formats.nbytes(formats.to_csr(w, 16)) == nnz * 6 + 65 * 8
    assert formats.nbytes(formats.to_csr(w, 32)) == nnz * 8 + 65 * 8
    assert formats.nbytes(formats.to_nm(WEIGHTS["2:4"], 2, 4)) == 19 * 32 * 4 + 19 * 16
    # one bit per weight (rows padded to 64 columns), 4 bytes per kept one, 8 padding values
    assert formats.nbytes(formats.to_bitmask(w)) == 64 * 256 // 8 + (nnz + 8) * 4 + 65 * 8


def test_bitmask_rows_reach_past_a_byte_and_a_word_boundary():
    """Widths around the mask's 8- and 64-column units, every value kept: each expansion reads
    a full byte of mask and the last row's vector read runs into the padding."""
    for width in (1, 7, 8, 9, 63, 64, 65, 130):
        w = torch.randn(3, width)
        x = torch.randn(1, width)
        parts = formats.to_bitmask(w)
        torch.testing.assert_close(KERNELS["bitmask"].run(parts, x, None), x @ w.t())


def test_delta8_bridges_gaps_wider_than_a_byte():
    w = torch.zeros(3, 70000)
    w[0, [0, 300, 69999]] = torch.tensor([1.0, 2.0, 3.0])
    w[1, 600] = -4.0  # row 2 keeps nothing
    parts = formats.to_delta8(w)
    # steps 0; 300 = 1 * 255 + 45; 69699 = 273 * 255 + 84; 600 = 2 * 255 + 90: kept entries plus bridges
    assert parts["deltas"].numel() == 1 + (1 + 1) + (273 + 1) + (2 + 1)
    assert torch.equal(formats.delta8_dense(parts), w)
    for batch in (1, 9):
        x = torch.randn(batch, 70000)
        torch.testing.assert_close(KERNELS["delta8"].run(parts, x, None), x @ w.t())
