"""The seed examples, reproduced: what an LSTM layer returns, and a character LSTM on "hihello".

Each function computes and returns its results; :func:`print_lstm_outputs` and :func:`print_hihello`
show them with an explanation. ``lstmkit example ...`` runs them from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import Tensor, nn

from . import keras

SEED_INPUT = [
    [0.1, 4.2, 1.5, 1.1, 2.8],
    [1.0, 3.1, 2.5, 0.7, 1.1],
    [0.3, 2.1, 1.5, 2.1, 0.1],
    [2.2, 1.4, 0.5, 0.9, 1.1],
]


def lstm_arguments(constant: object) -> dict[str, object]:
    """The Keras ``LSTM`` arguments of the seed: sequences and states returned, kernels and recurrent
    kernels filled with ``constant`` (a number, or a Keras initializer for Keras itself), bias
    initializer 0; everything else is Keras' default, so ``unit_forget_bias=True`` starts the
    forget-gate bias at 1."""
    return dict(
        return_sequences=True,
        return_state=True,
        kernel_initializer=constant,
        recurrent_initializer=constant,
        bias_initializer="zeros",
    )


def lstm_outputs(units: int = 3, constant: float = 0.1, unit_forget_bias: bool = True) -> dict[str, Tensor]:
    """Run the seed's 1x4x5 input through ``LSTM(units)`` and ``Bidirectional(LSTM(units))`` with
    :func:`lstm_arguments`, as the Keras seed does (``unit_forget_bias=False``: the variant whose
    forget-gate bias starts at 0 instead of Keras' default 1)."""
    x = torch.tensor([SEED_INPUT])
    options = lstm_arguments(constant) | {"unit_forget_bias": unit_forget_bias, "input_size": x.shape[-1]}
    with torch.no_grad():
        sequence, h, c = keras.LSTM(units, **options)(x)
        bi = keras.Bidirectional(keras.LSTM(units, **options))
        bi_sequence, fwd_h, fwd_c, bwd_h, bwd_c = bi(x)
    return {
        "input": x,
        "sequence": sequence,
        "h": h,
        "c": c,
        "bi_sequence": bi_sequence,
        "fwd_h": fwd_h,
        "fwd_c": fwd_c,
        "bwd_h": bwd_h,
        "bwd_c": bwd_c,
    }


def print_lstm_outputs(console: Console | None = None) -> dict[str, Tensor]:
    console = console or Console()
    out = lstm_outputs()
    units = out["h"].shape[-1]

    def show(name: str, tensor: Tensor, what: str) -> None:
        rows = tensor[0].tolist()
        rows = rows if isinstance(rows[0], list) else [rows]
        text = "\n".join("  [" + ", ".join(f"{v: .6f}" for v in row) + "]" for row in rows)
        console.print(f"[bold]{name}[/bold] {tuple(tensor.shape)}: {escape(what)}\n{text}")

    console.rule("LSTM(3) on one sequence of 4 steps x 5 features (kernels = 0.1, bias initializer 0)")
    console.print(
        "The seed's code as written: Keras' default unit_forget_bias=True adds 1 to the forget-gate bias, "
        "so the forget gate starts at sigmoid(1 + ...) and the memory c is kept longer."
    )
    show("input", out["input"], "batch of 1 sequence, 4 time steps, 5 features")
    show("output sequence", out["sequence"], f"h_t at every step (return_sequences=True), {units} units")
    show("h", out["h"], "final hidden state = the last row of the output sequence (return_state=True)")
    show("c", out["c"], "final cell state: the LSTM's memory, not part of the output; unbounded, unlike h")
    console.rule("Bidirectional(LSTM(3)): a forward and a backward LSTM, outputs concatenated")
    show("output sequence", out["bi_sequence"], "[forward h_t | backward h_t] per step: 2 x 3 units")
    show("forward h", out["fwd_h"], "forward LSTM after reading steps 1..4 (= left half of the last row)")
    show("forward c", out["fwd_c"], "forward LSTM's final cell state")
    show("backward h", out["bwd_h"], "backward LSTM after reading steps 4..1 (= right half of the FIRST row)")
    show("backward c", out["bwd_c"], "backward LSTM's final cell state")
    console.print(
        "With equal constant weights the forward LSTM here equals the plain LSTM above, so its h and c "
        "repeat them; the backward one read the same steps in the other order."
    )
    aside = lstm_outputs(unit_forget_bias=False)
    console.rule("Aside, not the seed's code: unit_forget_bias=False")
    show("h", aside["h"], "final hidden state with the forget-gate bias at 0 instead of 1")
    show("c", aside["c"], "final cell state: smaller, as the forget gate lets less of the memory through")
    return out


HIHELLO = "hihello"


@dataclass
class HiHelloRun:
    """One training run of the hihello model: the loss and decoded prediction after each epoch."""

    output_activation: str
    losses: list[float] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)


def keras_categorical_crossentropy(probabilities: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Keras' categorical cross-entropy on (not necessarily normalised) probabilities: divide by
    the sum, clip to [eps, 1 - eps], then ``-sum(y log p)`` averaged over samples. A relu output
    that is all zero gives 0/0 = NaN, which is how the seed's relu model fails."""
    probabilities = probabilities / probabilities.sum(dim=-1, keepdim=True)
    probabilities = probabilities.clamp(eps, 1 - eps)
    return -(target * probabilities.log()).sum(dim=-1).mean()


class HiHelloModel(nn.Module):
    """LSTM(5) returning sequences -> time-distributed Dense(5) -> an output activation."""

    def __init__(self, vocab_size: int, output_activation: str) -> None:
        super().__init__()
        self.lstm = keras.LSTM(vocab_size, return_sequences=True, input_size=vocab_size)
        self.dense = nn.Linear(vocab_size, vocab_size)
        self.activation = {"softmax": lambda z: F.softmax(z, dim=-1), "sigmoid": torch.sigmoid, "relu": torch.relu}[
            output_activation
        ]

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.dense(self.lstm(x)))


def hihello(output_activation: str = "softmax", epochs: int = 50, lr: float = 0.1, seed: int = 0) -> HiHelloRun:
    """Teach a character LSTM to map "hihell" -> "ihello" (one-hot in, Adam lr 0.1, 50 epochs)."""
    torch.manual_seed(seed)
    chars = sorted(set(HIHELLO), key=HIHELLO.index)  # h, i, e, l, o
    index = {ch: i for i, ch in enumerate(chars)}
    source = torch.tensor([[index[ch] for ch in HIHELLO[:-1]]])
    target = torch.tensor([[index[ch] for ch in HIHELLO[1:]]])
    x = F.one_hot(source, len(chars)).float()
    y = F.one_hot(target, len(chars)).float()
    model = HiHelloModel(len(chars), output_activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    run = HiHelloRun(output_activation)
    for _ in range(epochs):
        probabilities = model(x)
        loss = keras_categorical_crossentropy(probabilities, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.losses.append(loss.item())
        run.predictions.append("".join(chars[i] for i in probabilities.argmax(dim=-1)[0].tolist()))
    return run


def print_hihello(console: Console | None = None, epochs: int = 50) -> list[HiHelloRun]:
    console = console or Console()
    console.rule('"hihello": a character LSTM learns hihell -> ihello')
    runs = [hihello(activation, epochs=epochs) for activation in ("softmax", "sigmoid", "relu")]
    softmax = runs[0]
    for epoch in range(0, epochs, max(1, epochs // 10)):
        console.print(
            f"epoch {epoch + 1:3d}  loss {softmax.losses[epoch]:.4f}  prediction {softmax.predictions[epoch]!r}"
        )
    console.print(f"epoch {epochs:3d}  loss {softmax.losses[-1]:.4f}  prediction {softmax.predictions[-1]!r}")
    table = Table(title="Output layer compared (same LSTM, same data, categorical cross-entropy)")
    for column in ("output", "loss at epoch 1", f"loss at epoch {epochs}", "final prediction", "learned?"):
        table.add_column(column)
    for run in runs:
        learned = run.predictions[-1] == HIHELLO[1:]
        table.add_row(
            run.output_activation,
            f"{run.losses[0]:.4f}",
            f"{run.losses[-1]:.4f}",
            repr(run.predictions[-1]),
            "yes" if learned else "no",
        )
    console.print(table)
    console.print(
        "softmax gives a distribution over the 5 characters; sigmoid scores each character on its own, "
        "so its outputs need the loss's renormalisation; relu outputs can all be 0, the normalised "
        "probabilities become 0/0 and the loss does not converge (NaN or stuck)."
    )
    return runs
