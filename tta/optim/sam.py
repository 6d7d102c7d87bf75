"""Sharpness-aware minimization (Foret et al., ICLR 2021) as used by SAR (Niu et al., ICLR 2023).

SAM wraps a base optimizer. ``first_step`` moves every parameter that has a gradient to
θ + ε with ε = ρ g / (‖g‖ + 1e-12), ‖g‖ the global L2 norm over those parameters
(``adaptive`` scales by |θ| as in ASAM). ``second_step`` moves back to θ and lets the base
optimizer step with the gradient taken at θ + ε. This follows mr-eggplant/SAR ``sam.py``
(itself davda54/sam), with one change: ``state_dict`` also holds the base optimizer's state
(e.g. SGD momentum), so a checkpoint round-trips exactly. SAR's reference reset reloads the
state_dict of the reference SAM, which does *not* hold that momentum; see
``tta.methods.sar`` for how the reset reproduces it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.optim import Optimizer

from ..errors import InputError


class SAM(Optimizer):
    """SAM over ``base_optimizer(param_groups, **base_kwargs)``; the two share param_groups."""

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer] = torch.optim.SGD,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        if not rho >= 0.0:
            raise InputError(f"SAM: rho must be >= 0, got {rho!r}; pass rho=0.05 (the SAR default)")
        super().__init__(params, dict(rho=float(rho), adaptive=bool(adaptive), **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._climbed: list[torch.Tensor] = []  # parameters moved by the last first_step

    def _params_with_grad(self) -> list[tuple[dict[str, Any], torch.Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """Global L2 norm of the (|θ|-scaled when adaptive) gradients."""
        pairs = self._params_with_grad()
        if not pairs:
            return torch.zeros(())
        device = pairs[0][1].device
        norms = [((p.abs() if g["adaptive"] else 1.0) * p.grad).norm(p=2).to(device) for g, p in pairs]
        return torch.linalg.vector_norm(torch.stack(norms), ord=2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Climb to θ + ε (saving θ) along the current gradients."""
        norm = self.grad_norm()
        self._climbed = []
        for group, p in self._params_with_grad():
            scale = group["rho"] / (norm + 1e-12)
            self.state[p]["old_p"] = p.detach().clone()
            p.add_((p.square() if group["adaptive"] else 1.0) * p.grad * scale.to(p))
            self._climbed.append(p)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def undo_first_step(self) -> None:
        """Return to θ without a base step (when the loss at θ + ε turns out unusable)."""
        for p in self._climbed:
            p.copy_(self.state[p]["old_p"])
        self._climbed = []
        self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to θ and take the base step with the gradients taken at θ + ε."""
        for _, p in self._params_with_grad():
            p.copy_(self.state[p]["old_p"])
        self._climbed = []
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        """One SAM update; ``closure`` must redo the forward and backward pass at θ + ε."""
        if closure is None:
            raise InputError("SAM.step needs a closure that recomputes the loss and calls backward; "
                             "or call first_step() and second_step() yourself")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            closure()
        self.second_step()

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["base"] = self.base_optimizer.state_dict()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        base = state_dict.pop("base", None)
        super().load_state_dict(state_dict)
        self.base_optimizer.param_groups = self.param_groups
        if base is not None:
            self.base_optimizer.load_state_dict(base)
            self.base_optimizer.param_groups = self.param_groups
