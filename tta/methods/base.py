"""The adapter contract every method follows.

An adapter wraps a model: ``forward(x)`` predicts and adapts in one call, and
``reset()`` restores the exact state it had right after construction (including
any random initialization a method drew). Adaptation state lives in buffers and
parameters, so ``state_dict()``, ``.to(device)`` and checkpointing just work.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError
from ..runtime import prefers_channels_last
from ..validate import check_images


class Adapter(nn.Module):
    """Base class of every test-time adaptation method.

    Subclasses set the class attributes, build their state in ``__init__`` and
    implement ``adapt_forward``. Normalization-only methods (``needs_grad=False``)
    run under ``torch.no_grad()`` and never build an autograd graph.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: per-dataset defaults for the method's options, shown by ``tta list methods``
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_grad: ClassVar[bool] = False
    #: smallest batch the method can adapt on; smaller batches raise InputError
    min_batch_size: ClassVar[int] = 1
    #: text after the summary in ``tta list``, e.g. honest caveats
    notes: ClassVar[str] = ""
    #: defaults that override the dataset ones for a shift, e.g. {"mixed": {"K": 128}}
    shift_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: why batches below ``min_batch_size`` cannot be adapted on, for the error message
    min_batch_reason: ClassVar[str] = ""

    def __init__(self, model: nn.Module, *, channels_last: bool | None = None) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self._initial_state: dict[str, torch.Tensor] | None = None
        self._channels_last_friendly = True

    # -- lifecycle -------------------------------------------------------
    def snapshot(self) -> None:
        """Record the state ``reset()`` returns to. Subclasses call this at the end of ``__init__``."""
        self._initial_state = copy.deepcopy(self.state_dict())
        self._channels_last_friendly = prefers_channels_last(self.model)
        if self._use_channels_last(next(self.model.parameters(), torch.empty(0)).device):
            self.model.to(memory_format=torch.channels_last)

    def reset(self) -> None:
        """Restore the exact state right after construction."""
        if self._initial_state is None:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call self.snapshot()")
        self.load_state_dict(self._initial_state)
        self.reset_extra()

    def reset_extra(self) -> None:
        """Hook for state outside ``state_dict`` (e.g. optimizer moments)."""

    def _apply(self, fn, recurse: bool = True):  # keep the snapshot on the module's device
        out = super()._apply(fn, recurse)
        if self._initial_state is not None:
            self._initial_state = {k: fn(v) if v.is_floating_point() else v for k, v in self._initial_state.items()}
        return out

    # -- forward ---------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict logits for ``x`` ((B,3,H,W) float in [0,1]) and adapt on it."""
        check_batch(x, self.min_batch_size, self.name, self.min_batch_reason)
        check_images(x, self.model)
        if self._use_channels_last(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        if self.needs_grad:
            return self.adapt_forward(x)
        with torch.no_grad():
            return self.adapt_forward(x)

    def adapt_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _use_channels_last(self, device: torch.device) -> bool:
        # On CPU, channels_last is faster for BatchNorm CNNs but slower around group norms.
        if self.channels_last is not None:
            return self.channels_last
        return device.type == "cpu" and self._channels_last_friendly

    @classmethod
    def defaults_for(cls, dataset: str | None = None, shift: str | None = None) -> dict[str, Any]:
        """Documented option defaults for a dataset ("cifar10", "cifar100", "imagenet")
        and shift ("iid", "continual", "mixed", ...). Override where a paper sets
        per-shift defaults (e.g. UnMix-TNS uses K = 128 for mixed domains)."""
        table = cls.dataset_defaults
        out = dict(table.get(dataset or "", table.get("default", {})))
        for key, opts in cls.shift_defaults.items():  # "mixed" also covers "mixed-dirichlet" etc.
            if shift and shift.startswith(key):
                out.update(opts)
        return out

    def hparams(self) -> dict[str, Any]:
        """The method's hyperparameters, recorded with every result."""
        return {}


def check_batch(x: object, min_batch_size: int, method: str, reason: str = "") -> None:
    """Raise ``InputError`` naming the problem and the fix for a malformed batch."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor batch, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"expected a batch of shape (B, C, H, W), got shape {tuple(x.shape)}; add a batch dimension")
    if not x.is_floating_point():
        raise InputError(
            f"expected float images in [0, 1], got dtype {x.dtype}; convert with x.float() / 255"
        )
    if x.shape[0] < min_batch_size:
        why = f" ({reason})" if reason else ""
        raise InputError(
            f"method {method!r} needs batches of at least {min_batch_size} images{why}, got {x.shape[0]}; "
            "use a larger batch or a method that supports single images (e.g. unmix-tns, source)"
        )
    if not torch.isfinite(x).all():
        raise InputError("the batch contains NaN or infinite values; clean the input images")
