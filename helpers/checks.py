"""Checks that compare a student's function or module with a reference and say what differs.

Every check can fail. A passing check prints a one-line verdict (nbval compares it); a failing one
raises :class:`CheckError` whose message names the shape, dtype, largest error and where it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckError(AssertionError):
    """A student's output differs from the reference; the message says how."""


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one output with its reference."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return None


def _shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    if math.prod(got) == math.prod(want):
        if sorted(got) == sorted(want):
            return " (same sizes in another order: a transpose or permute is missing or extra?)"
        return " (same number of elements: a reshape is missing or extra?)"
    if len(got) == len(want) - 1 or len(got) == len(want) + 1:
        return " (one dimension more or fewer: check keepdim= and the batch dimension)"
    return ""


def compare(
    actual: Any,
    expected: Any,
    *,
    name: str = "output",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    check_dtype: bool = True,
) -> Comparison:
    """Compare ``actual`` with ``expected`` (tensors, arrays, numbers, or sequences/dicts of them)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return Comparison(False, f"{name}: expected a dict, got {type(actual).__name__}")
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        if missing or extra:
            return Comparison(False, f"{name}: keys differ (missing {missing}, unexpected {extra})")
        for key in expected:
            result = compare(actual[key], expected[key], name=f"{name}[{key!r}]", atol=atol, rtol=rtol,
                             check_dtype=check_dtype)
            if not result:
                return result
        return Comparison(True, f"{name}: equal")

    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)):
            return Comparison(False, f"{name}: expected a {type(expected).__name__} of {len(expected)} "
                                     f"items, got {type(actual).__name__}")
        if len(actual) != len(expected):
            return Comparison(False, f"{name}: expected {len(expected)} items, got {len(actual)}")
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            result = compare(a, e, name=f"{name}[{i}]", atol=atol, rtol=rtol, check_dtype=check_dtype)
            if not result:
                return result
        return Comparison(True, f"{name}: equal")

    want = _as_tensor(expected)
    if want is None:  # a plain number or other value
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float, torch.Tensor, np.number)):
            got = float(actual)
            if math.isclose(got, float(expected), rel_tol=rtol, abs_tol=atol):
                return Comparison(True, f"{name}: equal")
            return Comparison(False, f"{name}: got {got:.6g}, expected {float(expected):.6g} "
                                     f"(atol={atol:g}, rtol={rtol:g})")
        if actual == expected:
            return Comparison(True, f"{name}: equal")
        return Comparison(False, f"{name}: got {actual!r}, expected {expected!r}")

    got = _as_tensor(actual)
    if got is None:
        return Comparison(False, f"{name}: expected a torch.Tensor of shape {_shape(want)}, "
                                 f"got {type(actual).__name__}")
    if _shape(got) != _shape(want):
        return Comparison(False, f"{name}: shape {_shape(got)}, expected {_shape(want)}"
                                 + _shape_hint(_shape(got), _shape(want)))
    if check_dtype and got.dtype != want.dtype:
        return Comparison(False, f"{name}: dtype {got.dtype}, expected {want.dtype}")

    got64 = got.detach().to("cpu", torch.float64)
    want64 = want.detach().to("cpu", torch.float64)
    bad_nan = torch.isnan(got64) & ~torch.isnan(want64)
    if bad_nan.any():
        where = tuple(int(i) for i in bad_nan.nonzero()[0])
        return Comparison(False, f"{name}: {int(bad_nan.sum())} NaN value(s) where the reference is a number "
                                 f"(first at index {where})")
    close = torch.isclose(got64, want64, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return Comparison(True, f"{name}: equal within atol={atol:g}, rtol={rtol:g}")
    error = (got64 - want64).abs().nan_to_num(nan=0.0, posinf=math.inf)
    error = torch.where(close, torch.zeros_like(error), error)
    flat = int(error.reshape(-1).argmax())
    index = tuple(int(i) for i in np.unravel_index(flat, _shape(want))) if want.dim() else ()
    return Comparison(
        False,
        f"{name}: {int((~close).sum())} of {close.numel()} values differ beyond atol={atol:g}, rtol={rtol:g}; "
        f"largest error {float(error.reshape(-1)[flat]):.3g} at index {index}: "
        f"got {float(got64[index]):.6g}, expected {float(want64[index]):.6g}",
    )


def assert_close(actual: Any, expected: Any, *, name: str = "output", atol: float = 1e-5, rtol: float = 1e-5,
                 check_dtype: bool = True) -> None:
    """Raise :class:`CheckError` with a readable message unless ``actual`` equals ``expected`` within tolerance."""
    result = compare(actual, expected, name=name, atol=atol, rtol=rtol, check_dtype=check_dtype)
    if not result:
        raise CheckError(result.message)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _describe_args(args: Sequence[Any]) -> str:
    parts = []
    for a in args:
        t = _as_tensor(a)
        parts.append(f"tensor{_shape(t)}" if t is not None else repr(a))
    return "(" + ", ".join(parts) + ")"


def _call(fn: Callable[..., Any], args: Sequence[Any], who: str) -> Any:
    try:
        return fn(*args)
    except NotImplementedError as exc:
        detail = f": {exc}" if str(exc) else ""
        raise CheckError(f"{who} is not written yet (it raised NotImplementedError{detail})") from None
    except Exception as exc:  # the student's code failed: say where, not a deep traceback
        raise CheckError(f"{who} raised {type(exc).__name__}: {exc} (called with {_describe_args(args)})") from exc


def _as_arg_tuples(inputs: Iterable[Any]) -> list[tuple[Any, ...]]:
    return [tuple(i) if isinstance(i, (tuple, list)) else (i,) for i in inputs]


def check_function(
    student: Callable[..., Any],
    reference: Callable[..., Any],
    inputs: Iterable[Any],
    *,
    name: str | None = None,
    reference_name: str | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    check_dtype: bool = True,
) -> None:
    """Call both functions on every input (a tensor or a tuple of arguments) and print a verdict.

    Raises :class:`CheckError` at the first input whose outputs differ.
    """
    name = name or getattr(student, "__name__", "your function")
    reference_name = reference_name or getattr(reference, "__qualname__", "the reference")
    cases = _as_arg_tuples(inputs)
    if not cases:
        raise ValueError("check_function needs at least one input")
    for i, args in enumerate(cases):
        want = reference(*args)
        got = _call(student, args, name)
        result = compare(got, want, name=f"{name}{_describe_args(args)}", atol=atol, rtol=rtol,
                         check_dtype=check_dtype)
        if not result:
            raise CheckError(f"input {i + 1} of {len(cases)}: {result.message}")
    print(f"✓ {name} matches {reference_name} on {_count(len(cases), 'input')} (atol={atol:g}, rtol={rtol:g})")


def copy_weights(student: nn.Module, reference: nn.Module) -> None:
    """Load the reference's parameters into the student's module; a clear error if the names differ."""
    want = reference.state_dict()
    have = student.state_dict()
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        raise CheckError(f"{type(student).__name__} has other parameter names than {type(reference).__name__}: "
                         f"missing {missing}, unexpected {unexpected}")
    for key, value in want.items():
        if have[key].shape != value.shape:
            raise CheckError(f"parameter {key!r}: shape {tuple(have[key].shape)}, expected {tuple(value.shape)}")
    student.load_state_dict(want)


def check_module(
    student: nn.Module,
    reference: nn.Module,
    inputs: Iterable[Any],
    *,
    name: str | None = None,
    reference_name: str | None = None,
    share_weights: bool = True,
    check_grads: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    """Compare outputs (and input gradients) of two modules on every input, then print a verdict.

    With ``share_weights`` the reference's weights are first copied into ``student`` (same names required).
    """
    name = name or type(student).__name__
    reference_name = reference_name or type(reference).__name__
    if not isinstance(student, nn.Module):
        raise CheckError(f"{name}: expected a torch.nn.Module, got {type(student).__name__}")
    if share_weights:
        copy_weights(student, reference)
    cases = _as_arg_tuples(inputs)
    grads_checked = False  # only a single-tensor output that needs a gradient is back-propagated
    for i, args in enumerate(cases):
        ref_args = [a.detach().clone().requires_grad_(check_grads and a.is_floating_point())
                    if isinstance(a, torch.Tensor) else a for a in args]
        stu_args = [a.detach().clone().requires_grad_(check_grads and a.is_floating_point())
                    if isinstance(a, torch.Tensor) else a for a in args]
        want = reference(*ref_args)
        got = _call(student, stu_args, name)
        prefix = f"input {i + 1} of {len(cases)}: "
        result = compare(got, want, name=f"{name}{_describe_args(args)}", atol=atol, rtol=rtol)
        if not result:
            raise CheckError(prefix + result.message)
        if check_grads and isinstance(want, torch.Tensor) and want.requires_grad:
            grads_checked = True
            upstream = torch.randn(want.shape, generator=torch.Generator().manual_seed(i), dtype=want.dtype)
            want.backward(upstream)
            got.backward(upstream)
            for j, (a, b) in enumerate(zip(stu_args, ref_args, strict=True)):
                if isinstance(b, torch.Tensor) and b.grad is not None:
                    grad = compare(a.grad, b.grad, name=f"gradient of argument {j + 1}", atol=atol * 10,
                                   rtol=rtol * 10)
                    if not grad:
                        raise CheckError(prefix + grad.message)
    what = "outputs and gradients" if grads_checked else "outputs"
    print(f"✓ {name} matches {reference_name}: {what} on {_count(len(cases), 'input')} (atol={atol:g}, rtol={rtol:g})")


def check_exercise(
    student: Callable[..., Any],
    reference: Callable[..., Any],
    inputs: Iterable[Any],
    *,
    name: str | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    check_dtype: bool = True,
) -> bool:
    """A chapter's self-check: like :func:`check_function`, but a stub that still raises
    NotImplementedError prints "not written yet" instead of failing. A wrong answer still raises."""
    name = name or getattr(student, "__name__", "your function")
    try:
        check_function(student, reference, inputs, name=name, reference_name="the expected answer",
                       atol=atol, rtol=rtol, check_dtype=check_dtype)
    except CheckError as exc:
        if "not written yet" in str(exc) and str(exc).startswith(name):
            print(f"◻ {name}: not written yet. Replace the `raise NotImplementedError` above and run this cell again.")
            return False
        raise
    return True


def rounded(values: Any, digits: int = 3) -> list[float]:
    """A tensor's (or array's, or number's) values as a flat list of rounded floats, for printing outputs that
    nbval compares; adding 0.0 turns -0.0 into 0.0."""
    return [round(v, digits) + 0.0 for v in torch.as_tensor(values).detach().double().flatten().tolist()]
