"""The long-lag problems: sequences whose answer hangs on something seen many steps before.

* :class:`AddingProblem` (Hochreiter & Schmidhuber 1997; in the form of Le et al. 2015 and Arjovsky
  et al. 2016): a sequence of ``lag`` steps, each a random value in [0, 1) and a marker; two steps
  are marked, one in the first half and one in the second. The target, read at the last step, is the
  sum of the two marked values. Predicting 1 whatever the input (the best memoryless guess) has a
  mean squared error of 1/6, the chance level.
* :class:`CopyMemory` (Arjovsky et al. 2016): ``length`` symbols out of ``symbols``, then ``lag - 1``
  blanks, a delimiter and ``length`` more blanks; the target is blank everywhere except at the last
  ``length`` steps, which must repeat the symbols of the start. Guessing gets 1 symbol in
  ``symbols`` right, the chance level.

Each generates its data, reads its prediction from a model's readout, and has its loss and score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor


def check_lag(lag: int, minimum: int) -> None:
    if not isinstance(lag, int) or isinstance(lag, bool) or lag < minimum:
        raise ValueError(f"lag must be an integer of at least {minimum}, got {lag!r}")


@dataclass(frozen=True)
class AddingProblem:
    """The adding problem at sequence length ``lag``: inputs ``(count, lag, 2)`` (value, marker),
    targets ``(count,)``, the sum of the two marked values.

        >>> inputs, targets = AddingProblem(6).generate(2, torch.Generator().manual_seed(0))
        >>> tuple(inputs.shape), tuple(targets.shape)
        ((2, 6, 2), (2,))
        >>> bool(torch.allclose((inputs[..., 0] * inputs[..., 1]).sum(1), targets))
        True
    """

    lag: int
    name: ClassVar[str] = "adding"
    input_size: ClassVar[int] = 2
    output_size: ClassVar[int] = 1
    metric: ClassVar[str] = "mse"
    higher_is_better: ClassVar[bool] = False
    chance: ClassVar[float] = 1 / 6  # Var(u1 + u2) for u ~ U(0, 1): the error of always answering 1

    def __post_init__(self) -> None:
        check_lag(self.lag, 2)

    @property
    def steps(self) -> int:
        """Time steps of one sequence."""
        return self.lag

    def generate(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` sequences and their targets, drawn from ``generator``."""
        half = self.lag // 2
        values = torch.rand(count, self.lag, generator=generator)
        first = torch.randint(0, half, (count,), generator=generator)
        second = torch.randint(half, self.lag, (count,), generator=generator)
        rows = torch.arange(count)
        markers = torch.zeros(count, self.lag)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        return torch.stack([values, markers], dim=-1), values[rows, first] + values[rows, second]

    def outputs(self, readout: Tensor) -> Tensor:
        """The prediction from the readout of every step ``(batch, steps, 1)``: the last step's."""
        return readout[:, -1, 0]

    def loss(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """Summed squared error and the number of items (the Trainer's contract)."""
        return F.mse_loss(outputs, targets, reduction="sum"), targets.numel()

    def final_step_loss(self, last_readout: Tensor, targets: Tensor) -> Tensor:
        """The summed loss made at the last step from its readout ``(batch, 1)``."""
        return F.mse_loss(last_readout[:, 0], targets, reduction="sum")

    def score(self, outputs: Tensor, targets: Tensor) -> float:
        """Mean squared error."""
        return float(F.mse_loss(outputs, targets))


@dataclass(frozen=True)
class CopyMemory:
    """The copy-memory task with delay ``lag``: inputs ``(count, lag + 2 * length)`` of symbol ids
    (0 blank, 1..``symbols`` the symbols, ``symbols + 1`` the delimiter), targets of the same shape
    (blank, then the first ``length`` inputs again at the end).

        >>> task = CopyMemory(5, length=3)
        >>> inputs, targets = task.generate(1, torch.Generator().manual_seed(0))
        >>> tuple(inputs.shape), int(inputs[0, 3 + 4]) == task.delimiter
        ((1, 11), True)
        >>> bool(torch.equal(targets[0, -3:], inputs[0, :3])), int(targets[0, :-3].abs().sum())
        (True, 0)
    """

    lag: int
    symbols: int = 8
    length: int = 10
    name: ClassVar[str] = "copy"
    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_lag(self.lag, 1)
        if self.symbols < 2 or self.length < 1:
            raise ValueError(
                f"need at least 2 symbols and length >= 1, got symbols={self.symbols}, length={self.length}"
            )

    @property
    def steps(self) -> int:
        """Time steps of one sequence: the symbols, the delay, the delimiter's step and the recall."""
        return self.lag + 2 * self.length

    @property
    def delimiter(self) -> int:
        return self.symbols + 1

    @property
    def input_size(self) -> int:
        """One-hot size of the inputs: blank, the symbols, the delimiter."""
        return self.symbols + 2

    @property
    def output_size(self) -> int:
        """Classes of the outputs: blank and the symbols."""
        return self.symbols + 1

    @property
    def chance(self) -> float:
        """Accuracy on the recalled symbols of a guess."""
        return 1 / self.symbols

    def generate(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` input sequences of ids and their target ids, drawn from ``generator``."""
        memory = torch.randint(1, self.symbols + 1, (count, self.length), generator=generator)
        inputs = torch.zeros(count, self.steps, dtype=torch.long)
        inputs[:, : self.length] = memory
        inputs[:, self.length + self.lag - 1] = self.delimiter
        targets = torch.zeros(count, self.steps, dtype=torch.long)
        targets[:, -self.length :] = memory
        return inputs, targets

    def outputs(self, readout: Tensor) -> Tensor:
        """Logits of every step, ``(batch, steps, symbols + 1)``."""
        return readout

    def loss(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """Summed cross-entropy over every step and the number of steps (as Arjovsky et al.)."""
        loss = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), reduction="sum")
        return loss, targets.numel()

    def final_step_loss(self, last_readout: Tensor, targets: Tensor) -> Tensor:
        """The summed cross-entropy of the last step."""
        return F.cross_entropy(last_readout, targets[:, -1], reduction="sum")

    def score(self, outputs: Tensor, targets: Tensor) -> float:
        """Accuracy on the recalled symbols (the last ``length`` steps)."""
        recalled = outputs[:, -self.length :].argmax(-1)
        return float((recalled == targets[:, -self.length :]).float().mean())


LongLagTask = AddingProblem | CopyMemory
TASK_NAMES = ("adding", "copy")


def make_task(name: str, lag: int, copy_length: int = 10) -> LongLagTask:
    """The task called ``name`` (``"adding"`` or ``"copy"``, remembering ``copy_length`` symbols) at
    ``lag``.

    >>> make_task("copy", 10).steps, make_task("copy", 10, copy_length=5).steps
    (30, 20)
    """
    if name == "adding":
        return AddingProblem(lag)
    if name == "copy":
        return CopyMemory(lag, length=copy_length)
    raise ValueError(f"unknown long-lag task {name!r}: expected one of {TASK_NAMES}")
