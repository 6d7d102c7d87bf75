"""``Adapter``: the module every method returns, an explicit composition of parts.

An adapter wraps a model whose BatchNorm layers a statistics policy has already swapped,
and optionally carries an objective, an optimizer over selected parameters, the method's
own state, a teacher and a step hook. ``forward(x)`` predicts and adapts in one call.

The method's own state is the part named ``memory`` (a ``StepState``, a sample memory of
``_sample_memory`` or any module); the name is kept because it prefixes that part's keys in
every saved ``state_dict()``.

State: every part that is an ``nn.Module`` (model, objective, memory, teacher) is a
submodule, so its parameters and buffers are in ``state_dict()``. What is not a tensor
of a module (optimizer moments, the adapter's random generator) travels as the
adapter's extra state (``get_extra_state``/``set_extra_state``), so ``state_dict()`` holds
everything a method carries across batches: ``reset()`` reloads the snapshot taken right
after construction, and resume saves and loads the same ``state_dict()``. A state part with
contents that are not tensors implements ``get_extra_state``/``set_extra_state`` itself.

``check_batch`` is the check every adapter applies to a batch before adapting on it.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from ..errors import InputError, TTAError
from ..runtime import prefers_channels_last
from ..validate import check_images


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


#: ``step(adapter, x) -> logits``: one adaptation step on batch ``x``, returning the predictions
StepFn = Callable[["Adapter", torch.Tensor], torch.Tensor]
#: ``context(model, x, **batch_info)``: a context manager that hands per-batch side information to the layers
BatchContext = Callable[..., ContextManager[None]]


class _SnapshotAfterInit(type(nn.Module)):
    """Takes the ``reset()`` snapshot once the outermost ``__init__`` has returned."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        obj.snapshot()
        return obj


def plain_step(adapter: "Adapter", x: torch.Tensor) -> torch.Tensor:
    """Statistics-only adaptation: the forward pass itself updates the layers' statistics."""
    return adapter.model(x)


def objective_step(adapter: "Adapter", x: torch.Tensor) -> torch.Tensor:
    """One optimizer step on ``objective(logits)``; the *pre-update* logits are returned (as TENT).
    Under fp16 the loss is scaled (``torch.amp.GradScaler``) so that small gradients survive half precision."""
    with torch.enable_grad():
        logits = adapter.model(x)
        loss = adapter.objective(logits)
        adapter.optimizer.zero_grad(set_to_none=True)
        scaler = adapter.grad_scaler
        if scaler is None:
            loss.backward()
            adapter.optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(adapter.optimizer)
            scaler.update()
    return logits.detach()


#: ``precision`` values: the autocast dtype of each (None: full float32)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Adapter(nn.Module, metaclass=_SnapshotAfterInit):
    """A model plus the parts that adapt it online; see the module docstring.

    Args:
        model: the student, its BatchNorm layers already replaced by the statistics policy.
        name: the method's registered name (for error messages).
        hparams: the resolved options, recorded with every result.
        objective: loss on the logits (a module is registered, so its buffers are state).
        optimizer: built over the parameters the method adapts; its state is extra state.
        memory, teacher: optional modules (``memory``: the method's own state across batches); their
            tensors are state like the model's.
        step: the update; default ``objective_step`` with an objective, else ``plain_step``.
        needs_grad: whether ``step`` builds a graph; default: whether there is an optimizer.
        seed: seeds ``self.generator`` for the method's own random draws (saved with the state).
        batch_context: takes per-batch keyword arguments of ``forward`` (e.g. ``domain_ids``).
    """

    #: what ``forward`` returns: "logits", or "probabilities" for methods whose official output is
    #: a probability vector (LAME); ``tta run`` takes the softmax of logits only
    output: str = "logits"

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        hparams: dict[str, Any] | None = None,
        objective: Callable[[torch.Tensor], torch.Tensor] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        memory: nn.Module | None = None,
        teacher: nn.Module | None = None,
        step: StepFn | None = None,
        needs_grad: bool | None = None,
        seed: int | None = None,
        min_batch_size: int = 1,
        min_batch_reason: str = "",
        batch_context: BatchContext | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.memory = memory
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
        self.step = step or (objective_step if objective is not None else plain_step)
        if self.step is objective_step and optimizer is None:
            raise TTAError(f"method {name!r} has an objective but no optimizer; pass optimizer=")
        self.needs_grad = optimizer is not None if needs_grad is None else needs_grad
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.min_batch_size = min_batch_size
        self.min_batch_reason = min_batch_reason
        self.batch_context = batch_context
        self._hparams = dict(hparams or {})
        self.channels_last = channels_last
        self.precision = "fp32"
        self.grad_scaler: torch.amp.GradScaler | None = None
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # batches adapted on since reset
        self._initial_state: dict[str, Any] | None = None
        self._channels_last_friendly = prefers_channels_last(self.model)
        if self._use_channels_last(next(self.model.parameters(), torch.empty(0)).device):
            self.model.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)

    # -- state -----------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "generator": None if self.generator is None else self.generator.get_state(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"].cpu())

    def snapshot(self) -> None:
        """Record the state ``reset()`` returns to; called automatically after construction."""
        self._initial_state = copy.deepcopy(self.state_dict())

    def reset(self) -> None:
        """Restore the exact state right after construction: student, teacher, memory, optimizer, counters."""
        if self._initial_state is None:
            raise RuntimeError(f"{type(self).__name__} was not snapshotted")
        self.load_state_dict(self._initial_state)

    def restore(self, *parts: str) -> None:
        """Reload only ``parts`` ("model", "teacher", "memory", "objective", "optimizer") from the
        reset snapshot; for methods whose own recovery resets some parts and keeps others (SAR, RDumb)."""
        if self._initial_state is None:
            raise RuntimeError(f"{type(self).__name__} was not snapshotted")
        for part in parts:
            if part == "optimizer":
                saved = self._initial_state["_extra_state"]["optimizer"]
                if self.optimizer is not None and saved is not None:
                    self.optimizer.load_state_dict(copy.deepcopy(saved))
                continue
            module = getattr(self, part)
            prefix = part + "."
            module.load_state_dict({k[len(prefix):]: v for k, v in self._initial_state.items()
                                    if k.startswith(prefix)})

    def _apply(self, fn, recurse: bool = True):  # keep the snapshot on the module's device
        out = super()._apply(fn, recurse)
        if getattr(self, "_initial_state", None) is not None:
            self._initial_state = {k: fn(v) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                                   for k, v in self._initial_state.items()}
        return out

    def hparams(self) -> dict[str, Any]:
        """The resolved options, recorded with every result."""
        return copy.deepcopy(self._hparams)

    # -- precision -------------------------------------------------------
    def set_precision(self, precision: str) -> "Adapter":
        """Run the step under autocast: "fp32" (none), "bf16" (CPU and GPU) or "fp16" (GPU only, with a
        gradient scaler for objective-based gradient methods). Statistics, buffers, parameters and optimizer
        state stay float32; only the autocast ops (convolutions, matrix products) run in the lower precision."""
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self._check_precision(precision, self._device())
        if precision == "fp16" and self.needs_grad and self.step is not objective_step:
            raise InputError(f"method {self.name!r} takes its own gradient steps, which have no fp16 gradient "
                             "scaling; use precision bf16 (same exponent range as float32, no scaler needed)")
        self.precision = precision
        self.grad_scaler = (torch.amp.GradScaler(self._device().type)
                            if precision == "fp16" and self.step is objective_step and self.optimizer is not None
                            else None)
        return self

    def _device(self) -> torch.device:
        return next(self.model.parameters(), torch.empty(0)).device

    @staticmethod
    def _check_precision(precision: str, device: torch.device) -> None:
        if precision == "fp16" and device.type != "cuda":
            raise InputError(f"precision fp16 needs a CUDA GPU (the model is on {device.type}); "
                             "use bf16 on CPU, or --device cuda")

    def _autocast(self, device: torch.device) -> ContextManager[Any]:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        self._check_precision(self.precision, device)
        return torch.autocast(device.type, dtype=dtype)

    # -- forward ---------------------------------------------------------
    def forward(self, x: torch.Tensor, **batch_info: Any) -> torch.Tensor:
        """Predict logits for ``x`` ((B,3,H,W) float in [0,1]) and adapt on it."""
        check_batch(x, self.min_batch_size, self.name, self.min_batch_reason)
        check_images(x, self.model)
        if batch_info and self.batch_context is None:
            raise InputError(f"method {self.name!r} takes no per-batch arguments, got {sorted(batch_info)}; "
                             "call it with the images only")
        if self._use_channels_last(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        if self.needs_grad and torch.is_inference_mode_enabled():
            raise TTAError(
                f"method {self.name!r} takes gradient steps but runs under torch.inference_mode(); "
                "call it outside inference_mode, or use a normalization-only method"
            )
        context = self.batch_context(self.model, x, **batch_info) if self.batch_context else contextlib.nullcontext()
        with context, self._autocast(x.device), (contextlib.nullcontext() if self.needs_grad else torch.no_grad()):
            logits = self.step(self, x)
        if logits.dtype != torch.float32 and logits.is_floating_point() and self.precision != "fp32":
            logits = logits.float()  # callers (metrics, softmax) get float32 whatever the precision
        with torch.no_grad():
            self.steps += 1
        return logits

    def adapt_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The step without the input checks and the no-grad guard (tests compare autograd paths)."""
        return self.step(self, x)

    def _use_channels_last(self, device: torch.device) -> bool:
        # On CPU, channels_last is faster for BatchNorm CNNs but slower around group norms.
        if self.channels_last is not None:
            return self.channels_last
        return device.type == "cpu" and self._channels_last_friendly

    def extra_repr(self) -> str:
        return f"method={self.name!r}"
