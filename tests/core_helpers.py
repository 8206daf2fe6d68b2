"""What the tests of the core library (cells, layers, engines) share: the user-defined cell of
``examples/custom_cell.py``, and the run of an engine next to its oracle, the reference loop, from
identical inputs and generator state."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

import lstmkit
from lstmkit.engine import torch_engine
from lstmkit.engine.reference import run_sequence

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# how close an engine must come to the reference loop
ENGINE_TOLERANCE = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module; its ``main()`` does not run."""
    spec = importlib.util.spec_from_file_location(f"examples.{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_nn_under_autocast(module: torch.nn.Module, *args: object) -> object:
    """``module(*args)`` under bfloat16 autocast, or ``None`` where torch.nn.LSTM cannot run there:
    on a CPU without AVX-512 oneDNN has no bf16 kernels and torch's LSTM fails ("could not create a
    primitive descriptor"); the other torch.nn layers run."""
    if isinstance(module, torch.nn.LSTM) and not torch_engine.onednn_bf16():
        return None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return module(*args)


CIFGCell: type[lstmkit.Cell] = load_example("custom_cell").CIFGCell
"""The coupled input-forget gate LSTM of ``examples/custom_cell.py``: a cell as a user writes it."""


class PeepholeCIFGCell(CIFGCell):
    """CIFG whose input gate sees the previous cell state: a parameter used by pointwise only."""

    def __init__(self, input_size, hidden_size, **kwargs):
        super().__init__(input_size, hidden_size, **kwargs)
        self.weight_ci = torch.nn.Parameter(torch.empty(hidden_size, dtype=self.weight_ih.dtype))
        self.reset_parameters()

    def pointwise(self, xg, hg, state):
        h, c = state
        i, g, o = (xg + hg).chunk(3, dim=-1)
        i = torch.sigmoid(i + self.weight_ci * c)
        g, o = torch.tanh(g), torch.sigmoid(o)
        c = (1 - i) * c + i * g
        return (o * torch.tanh(c), c), (i, g, o)


def make_valid(kind: str, steps: int, batch: int) -> torch.Tensor | None:
    """A ``(steps, batch)`` mask of real steps: ``"none"``, ``"lengths"`` (a padded batch, one
    sequence of length 0) or ``"holes"`` (arbitrary, as Keras masks may be)."""
    if kind == "none":
        return None
    if kind == "lengths":
        lengths = torch.tensor([steps, 1, 0, steps - 2, 3][:batch])
        return torch.arange(steps)[:, None] < lengths[None, :]
    return torch.rand(steps, batch) > 0.35


def run_both(
    run: Callable[..., object], cell: lstmkit.Cell, steps: int = 6, batch: int = 4, seed: int = 1, **options
) -> tuple[dict, dict]:
    """Run the reference loop and the engine entry point ``run`` from identical inputs and generator
    state; return for each the output, the final states and the gradients of the input, the initial
    states and every parameter."""
    dtype = cell.weight_ih.dtype
    x = torch.randn(steps, batch, cell.input_size, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(batch, size, dtype=dtype, requires_grad=True) for size in cell.state_sizes)
    weights = torch.randn(cell.recurrent_size, dtype=dtype)  # every output unit matters differently
    results = []
    for engine in (run_sequence, run):
        torch.manual_seed(seed)  # zoneout (and a random pointwise) draw from the global generator
        result = engine(cell, x, state, **options)
        loss = (result.output * weights).sum() + (result.state[0] ** 2).sum() + result.state[-1].sin().sum()
        names = ["input", *(f"{n}0" for n in cell.state_names), *(n for n, _ in cell.named_parameters())]
        grads = torch.autograd.grad(loss, [x, *state, *cell.parameters()])
        values = {"output": result.output}
        values |= {f"{name}_n": value for name, value in zip(cell.state_names, result.state, strict=True)}
        values |= {f"grad {name}": grad for name, grad in zip(names, grads, strict=True)}
        results.append(values)
    return results[0], results[1]


def assert_same(expected: dict, actual: dict, rtol: float, atol: float) -> None:
    """Every tensor of ``actual`` close to the one of the same name in ``expected``."""
    assert expected.keys() == actual.keys()
    for name, want in expected.items():
        torch.testing.assert_close(actual[name], want, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
