"""Training: the :class:`Trainer` loop every task uses, its :class:`TrainConfig`, checkpoints
(:mod:`~lstmkit.training.checkpoint`), bucketed batches (:mod:`~lstmkit.training.batching`) and
data-parallel launch (:mod:`~lstmkit.training.distributed`)."""

from .batching import batch_indices, pad_sequences
from .checkpoint import CheckpointError, load_pretrained, read_checkpoint, save_pretrained
from .config import TrainConfig, apply_overrides, config_from_dict
from .trainer import Trainer, TrainingDiverged, TrainResult, learning_rate, seed_everything

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "apply_overrides",
    "batch_indices",
    "config_from_dict",
    "learning_rate",
    "load_pretrained",
    "pad_sequences",
    "read_checkpoint",
    "save_pretrained",
    "seed_everything",
]
