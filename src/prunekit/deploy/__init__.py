"""Deployment: sparse kernels chosen by measurement (to_sparse), compressed forms, ONNX, int8, bench."""
from prunekit.deploy.choose import apply_kernels, plan_kernels, to_sparse
from prunekit.deploy.sparse_conv import SparseConv2d
from prunekit.deploy.sparse_linear import SparseLinear

__all__ = ["to_sparse", "plan_kernels", "apply_kernels", "SparseLinear", "SparseConv2d"]
