"""The waste classifier: the patent's distilled global+window vision transformer and its inference API."""

from .checkpoint import StudentCheckpoint, load_checkpoint, save_checkpoint
from .config import StudentConfig, tiny_config
from .inference import DEFAULT_MODEL_PATH, Classifier, Prediction, load_classifier
from .loss import DistillationLoss
from .preprocess import PreprocessConfig, preprocess_bgr
from .student import DistilledViT

__all__ = [
    "DEFAULT_MODEL_PATH",
    "Classifier",
    "DistillationLoss",
    "DistilledViT",
    "Prediction",
    "PreprocessConfig",
    "StudentCheckpoint",
    "StudentConfig",
    "load_checkpoint",
    "load_classifier",
    "preprocess_bgr",
    "save_checkpoint",
    "tiny_config",
]
