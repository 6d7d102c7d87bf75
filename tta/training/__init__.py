"""Training source backbones (any normalization layer) on a clean image set."""
from .augment import random_crop_flip
from .data import ImageArrays, load_images
from .trainer import TrainConfig, offline_accuracy, record_path, train, training_record

__all__ = ["ImageArrays", "TrainConfig", "offline_accuracy", "load_images", "random_crop_flip", "record_path", "train", "training_record"]
