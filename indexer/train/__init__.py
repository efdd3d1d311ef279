"""Training the dual encoder contrastively: ``heads``, ``finetune`` and ``scratch`` modes."""

from sightline.indexer.train.config import MODES, TrainConfig
from sightline.indexer.train.loop import EpochRecord, TrainResult
from sightline.indexer.train.run import DatasetRef, TrainJob, run_training

__all__ = ["MODES", "DatasetRef", "EpochRecord", "TrainConfig", "TrainJob", "TrainResult", "run_training"]
