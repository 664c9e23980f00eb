"""The training-loop convention every run of the course follows (LLaMA pretraining, MAE, SAM, and the systems after).

A run is a step function and a schedule. At each step the loop asks the schedule for the learning rate, calls
``step_fn(step, lr)``, which computes a loss and updates the model with :func:`optimiser_step` (zero the gradients,
back-propagate, clip, step: in one place), and appends one record to a :class:`History`. ``progress`` means the same
in every run: ``False`` draws nothing, ``True`` draws a tqdm bar named after the run, a string draws a bar with
that name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

StepResult = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, Mapping[str, Any]]
StepFn = Callable[[int, float], StepResult]


@dataclass
class History:
    """What a run measured: per step the loss, the learning rate, the gradient norm before clipping and any
    ``metrics`` the step function returned (name → one value per step); ``evals`` (step → value) from the
    evaluations during the run; ``seconds`` of wall time."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    evals: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.losses)

    def to_dict(self) -> dict[str, Any]:
        """The history as plain lists and numbers (for JSON)."""
        return asdict(self)


def progress_bar(progress: bool | str, total: int, name: str) -> tqdm | None:
    """A tqdm bar of ``total`` steps named ``name`` (``progress=True``) or ``progress`` (a string); None for False."""
    if not progress:
        return None
    return tqdm(total=total, desc=progress if isinstance(progress, str) else name)


def gradient_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the gradients (what ``clip_grad_norm_`` measures), without clipping."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def optimiser_step(model: nn.Module, optimiser: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                   grad_clip: float | None = 1.0) -> torch.Tensor:
    """One update: set every parameter group's learning rate to ``lr``, clear the old gradients, back-propagate
    ``loss``, clip the gradients' global norm to ``grad_clip`` (None: no clipping) and step.
    Returns the gradient norm before clipping (a detached float32 0-d tensor)."""
    for group in optimiser.param_groups:
        group["lr"] = lr
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is None:
        grad_norm = gradient_norm(model.parameters())
    else:
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimiser.step()
    return grad_norm.detach().float()


def train_loop(step_fn: StepFn, steps: int, schedule: Callable[[int], float], *, progress: bool | str = True,
               name: str = "training", evaluate: Callable[[], float] | None = None,
               eval_every: int = 0) -> History:
    """Run ``steps`` steps of ``step_fn(step, lr)`` with ``lr = schedule(step)`` and return their :class:`History`.

    ``step_fn`` returns ``(loss, grad_norm)`` or ``(loss, grad_norm, metrics)``. Values are kept as tensors during
    the run (no wait for a GPU at every step) and turned into floats at the end. With ``evaluate`` and
    ``eval_every`` > 0, ``evaluate()`` runs before steps 0, ``eval_every``, … and after the last step."""
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
    history = History()
    losses: list[torch.Tensor] = []
    grad_norms: list[torch.Tensor] = []
    bar = progress_bar(progress, steps, name)
    every = max(1, steps // 100)  # the bar's loss is refreshed about 100 times a run
    start = time.perf_counter()
    for step in range(steps):
        if evaluate is not None and eval_every > 0 and step % eval_every == 0:
            history.evals[step] = float(evaluate())
        lr = float(schedule(step))
        loss, grad_norm, *rest = step_fn(step, lr)
        losses.append(torch.as_tensor(loss).detach().float().reshape(()))
        grad_norms.append(torch.as_tensor(grad_norm).detach().float().reshape(()))
        history.lrs.append(lr)
        for key, value in (rest[0] if rest else {}).items():
            history.metrics.setdefault(key, []).append(value)
        if bar is not None:
            bar.update()
            if step % every == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{losses[-1].item():.3f}")
    if evaluate is not None and eval_every > 0:
        history.evals[steps] = float(evaluate())
    if bar is not None:
        bar.close()
    if losses:
        history.losses = torch.stack(losses).cpu().tolist()
        history.grad_norms = torch.stack(grad_norms).cpu().tolist()
    history.seconds = time.perf_counter() - start
    return history
