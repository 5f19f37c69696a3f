"""Training: the stages' loop, data, DDP plumbing, checkpoints and schedules (`train`)."""

from biovita_model.training.config import TrainConfig
from biovita_model.training.loop import STAND_IN, TrainResult, train

__all__ = ["STAND_IN", "TrainConfig", "TrainResult", "train"]
