"""Optimizers that test-time methods need beyond ``torch.optim``."""
from .sam import SAM

__all__ = ["SAM"]
