"""Fine-tuning: fit / evaluate, distillation from the dense model, BatchNorm recalibration."""
from prunekit.train.loop import (
                                 FitConfig,
                                 FitResult,
                                 distillation_loss,
                                 evaluate,
                                 fit,
                                 recalibrate_batchnorm,
                                 student_loss,
)

__all__ = ["FitConfig", "FitResult", "distillation_loss", "evaluate", "fit", "recalibrate_batchnorm",
           "student_loss"]
