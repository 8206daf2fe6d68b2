"""The character language model: embedding -> recurrent stack -> linear, and text generation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...cell_kinds import check_cell, recurrent_layer
from ...validation import check_probability
from ..common import TaskModel, embedding
from .data import Vocabulary


@dataclass
class CharLMConfig:
    """The model's shape. ``characters`` is the vocabulary (id 0, the unknown character, is implicit).
    ``dropout``: the probability of dropping a unit on every non-recurrent connection in training (the
    embedding's output, between layers and the last layer's output, as Zaremba et al. 2014 and
    torch's word language model); the recurrent ones keep every unit. ``forget_bias``: the starting
    bias of the forget gate of a gated cell (the GRU's update gate; :mod:`lstmkit.init`); ``None``
    keeps torch.nn's draw. The plain RNN has no forget gate and refuses it."""

    characters: str
    cell: str = "lstm"
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    forget_bias: float | None = None

    def __post_init__(self) -> None:
        check_cell(self.cell)
        check_probability("dropout", self.dropout)
        if self.forget_bias is not None and self.cell == "rnn":
            raise ValueError("forget_bias needs a forget gate; the plain rnn cell has none (gru, lstm, peephole, "
                             "layernorm have one)")  # fmt: skip
        if self.forget_bias is not None and not math.isfinite(self.forget_bias):
            raise ValueError(f"forget_bias must be finite, got {self.forget_bias!r}")
        if min(self.embedding_size, self.hidden_size, self.num_layers) < 1:
            raise ValueError("embedding_size, hidden_size and num_layers must be positive")
        if not self.characters:
            raise ValueError("the vocabulary (characters) is empty")


class CharLM(TaskModel):
    """Predicts the next character: ``logits, state = model(ids, state)`` for ``ids`` of shape
    ``(batch, steps)``.

        >>> model = CharLM(CharLMConfig("abc", hidden_size=8, embedding_size=4))
        >>> logits, state = model(torch.tensor([[1, 2, 3]]))
        >>> tuple(logits.shape)
        (1, 3, 4)
    """

    task = "charlm"
    config_class = CharLMConfig

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__(config)
        self.vocabulary = Vocabulary(config.characters)
        vocab_size = len(self.vocabulary)
        self.embedding = embedding(vocab_size, config.embedding_size)
        init = {} if config.forget_bias is None else {"forget_bias": config.forget_bias}
        self.rnn = recurrent_layer(
            config.cell, config.embedding_size, config.hidden_size, config.num_layers, dropout=config.dropout, **init
        )
        self.head = nn.Linear(config.hidden_size, vocab_size)

    def forward(self, ids: Tensor, state: object = None) -> tuple[Tensor, object]:
        output, state = self.rnn(self._dropout(self.embedding(ids)), state)
        return self.head(self._dropout(output)), state

    def _dropout(self, values: Tensor) -> Tensor:
        rate = self.config.dropout
        return F.dropout(values, rate, training=True) if rate and self.training else values


def cross_entropy_sum(model: nn.Module, batch: Tensor) -> tuple[Tensor, int]:
    """Summed next-character cross-entropy (nats) of windows ``(B, L + 1)`` and the number of
    predictions: the training loss of the task (in float32, under bf16 autocast too)."""
    targets = batch[:, 1:]
    loss, _ = _cross_entropy_and_state(model, batch[:, :-1], targets, None)
    return loss, targets.numel()


def _cross_entropy_and_state(model: nn.Module, inputs: Tensor, targets: Tensor, state: object) -> tuple[Tensor, object]:
    """The summed cross-entropy (nats, in float32) of predicting ``targets`` from ``inputs`` after
    ``state``, and the state after them."""
    logits, state = model(inputs, state)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return loss, state


@torch.no_grad()
def bits_per_character(model: CharLM, ids: Tensor, window: int = 256, streams: int = 64) -> float:
    """Cross-entropy in bits per character of the text ``ids``, every character predicted from all
    the text before it in its piece: the text is cut into at most ``streams`` contiguous pieces of at
    least ``window`` characters, read side by side ``window`` characters at a time with the state
    carried from each window to the next (as char-rnn and AWD-LSTM evaluate); the few characters left
    over continue the last piece."""
    if ids.numel() < 2:
        raise ValueError(f"need at least 2 characters to measure bits per character, got {ids.numel()}")
    model.eval()
    predictions = ids.numel() - 1
    pieces = max(1, min(streams, predictions // window))
    length = predictions // pieces
    inputs = ids[: pieces * length].reshape(pieces, length)
    targets = ids[1 : pieces * length + 1].reshape(pieces, length)
    total, state = 0.0, None
    for start in range(0, length, window):
        chunk = slice(start, start + window)
        loss, state = _cross_entropy_and_state(model, inputs[:, chunk], targets[:, chunk], state)
        total += float(loss)
    if pieces * length < predictions:  # the rest continues the last piece, from its final state
        last = tuple(part[:, -1:] for part in state) if isinstance(state, tuple) else state[:, -1:]
        rest = ids[pieces * length :]
        loss, _ = _cross_entropy_and_state(model, rest[None, :-1], rest[None, 1:], last)
        total += float(loss)
    return total / predictions / math.log(2)


@torch.no_grad()
def next_characters(model: CharLM, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` likeliest next characters after ``prompt`` with their probabilities, likeliest
    first (the unknown character, which generation never produces, is left out).

    >>> model = CharLM(CharLMConfig("ab", hidden_size=4, embedding_size=2))
    >>> [character for character, _ in next_characters(model, "ab", k=5)] in (["a", "b"], ["b", "a"])
    True
    """
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    model.eval()
    logits, _ = model(model.vocabulary.encode(prompt)[None])
    probabilities = F.softmax(logits[0, -1].float(), dim=-1)[1:]  # id 0, the unknown character, left out
    top = probabilities.topk(min(k, probabilities.numel()))
    return [(model.vocabulary.decode([int(i) + 1]), float(p)) for p, i in zip(top.values, top.indices, strict=True)]


@torch.no_grad()
def generate(
    model: CharLM,
    prompt: str,
    length: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[str]:
    """Stream ``length`` characters continuing ``prompt``: sample from the softmax of the logits
    divided by ``temperature``, among the ``top_k`` likeliest when given. The unknown character is
    never produced; characters of the prompt outside the vocabulary are read as unknown."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    model.eval()
    vocabulary = model.vocabulary
    ids = vocabulary.encode(prompt or "\n")
    logits, state = model(ids[None])
    last = logits[0, -1].float()  # sampled in float32, under bf16 autocast too
    for _ in range(length):
        scores = last / temperature
        scores[0] = -math.inf
        if top_k is not None and top_k < scores.numel():
            threshold = scores.topk(top_k).values[-1]
            scores = scores.masked_fill(scores < threshold, -math.inf)
        next_id = int(torch.multinomial(F.softmax(scores, dim=-1), 1, generator=generator))
        yield vocabulary.decode([next_id])
        logits, state = model(torch.tensor([[next_id]]), state)
        last = logits[0, -1].float()
