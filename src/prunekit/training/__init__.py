"""Pruning over training: schedules and the gradual pruner, soft channel masks, dynamic
sparsity (RigL/SET), lottery tickets."""
from prunekit.training.dynamic import DynamicSparsity
from prunekit.training.schedules import GradualPruner, Schedule, steps_per_epoch
from prunekit.training.soft import SoftChannelPruner

__all__ = ["DynamicSparsity", "GradualPruner", "Schedule", "SoftChannelPruner", "steps_per_epoch"]
