"""Running a model in eval mode and putting every module's mode back afterwards."""
from contextlib import contextmanager


@contextmanager
def eval_mode(model):
    """Eval mode (no BatchNorm statistics updated) for the duration; each module's own mode
    is restored after, not just the top module's."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
