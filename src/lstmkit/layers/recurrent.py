"""The :class:`Recurrent` layer: a stack of recurrent layers over any cell, with ``torch.nn.LSTM``'s
arguments, ``state_dict`` names and outputs, and the extras it lacks (see the class docstring): its
parameters under torch's flat names, bound to the cells on every call; the autocast, bfloat16 and
int8 precision rules; the time loop over layers and directions. The checks of a call's arguments
are :mod:`lstmkit.layers.arguments`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from ..cells import Cell, State
from ..engine import choose_layer, int8_loop, resolve_engine, run_sequence, torch_engine
from ..engine.dispatch import choose_int8
from ..engine.precision import (
    Int8Weight,
    bf16_gemms_active,
    bf16_hardware,
    bf16_weights_widened,
    cast_floats,
    reduced_precision,
)
from ..functional import check_merge_mode, dropout_mask, merge_directions
from ..validation import ArgumentError, check_probability
from . import plain_call
from .arguments import StateArg, prepare_call, repack, to_layout


class Recurrent(nn.Module):
    """A stack of recurrent layers over any :class:`~lstmkit.Cell`, with ``torch.nn.LSTM``'s options
    and the extras it lacks.

    Args:
        cell: a :class:`Cell` subclass (or any callable ``(input_size, hidden_size, bias=...,
            **cell_kwargs) -> Cell``); one is built per layer and direction.
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional:
            as in ``torch.nn.LSTM``.
        merge_mode: how the last layer combines its two directions: ``"concat"`` (as torch),
            ``"sum"``, ``"mul"`` or ``"ave"``. Inner layers always concatenate.
        recurrent_dropout: variational dropout on ``h`` before the recurrent multiply, one mask
            per sequence for all steps (Gal & Ghahramani 2016); training only.
        zoneout: probability that a state unit keeps its previous value (Krueger et al. 2016).
        engine: ``"auto"``, ``"native"`` or ``"reference"`` (see :mod:`lstmkit.engine`); ``None``
            follows ``$LSTMKIT_ENGINE``, else ``"auto"``.
        cell_kwargs: passed to every cell (e.g. ``reset_after=False`` for :class:`GRUCell`), among
            them the long-memory initialisations ``forget_bias``, ``chrono_init`` and
            ``recurrent_init`` (:mod:`lstmkit.init`; off by default: torch.nn's draw).

    ``forward(input, hx=None, *, lengths=None, mask=None, return_gates=False)`` returns
    ``(output, h_n)`` for single-state cells and ``(output, (h_n, c_n, ...))`` otherwise, plus a
    gate trace when ``return_gates=True``.

        >>> import torch, lstmkit
        >>> layer = lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 4, 8, num_layers=2, batch_first=True)
        >>> out, (h_n, c_n) = layer(torch.randn(3, 5, 4), lengths=[5, 2, 4])
        >>> tuple(out.shape), tuple(h_n.shape)
        ((3, 5, 8), (2, 3, 8))

    Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the weights stay float32 and the native
    kernels run their GEMMs on bfloat16 operands where the CPU has bf16 hardware, float32 elsewhere
    (gates, cell state and weight gradients in float32; :mod:`lstmkit.engine.precision`). Results
    come out in the dtype torch.nn's give under autocast: bfloat16 (float32 for an LSTM given a
    PackedSequence, and for :class:`GRU`).
    """

    # dtype of the results under CPU bfloat16 autocast, as torch.nn.LSTM's: padded input, PackedSequence
    autocast_output_dtype: torch.dtype = torch.bfloat16
    autocast_packed_output_dtype: torch.dtype = torch.float32

    def __init__(
        self,
        cell: Callable[..., Cell],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        merge_mode: str = "concat",
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        engine: str | None = None,
        **cell_kwargs: object,
    ) -> None:
        super().__init__()
        self.engine = None if engine is None else resolve_engine(engine)
        for name, value in (("batch_first", batch_first), ("bias", bias)):
            if not isinstance(value, bool):
                raise ArgumentError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
        if not isinstance(bidirectional, bool | int):
            raise ArgumentError(f"bidirectional must be a bool, got {type(bidirectional).__name__} {bidirectional!r}")
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        check_merge_mode(merge_mode)
        self.dropout = check_probability("dropout", dropout, upper_inclusive=True)
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout applies between layers, so it has no effect with num_layers=1 "
                f"(got dropout={dropout}); see recurrent_dropout and zoneout",
                stacklevel=2,
            )
        self.recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        self.zoneout = check_probability("zoneout", zoneout)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bool(bidirectional)
        self.merge_mode = merge_mode
        self._cells: list[Cell] = []
        self._bindings: list[tuple[nn.Module, str, str]] = []
        layer_input = input_size
        for layer in range(num_layers):
            for direction in range(self.num_directions):
                built = cell(layer_input, hidden_size, bias=bias, device=device, dtype=dtype, **cell_kwargs)
                if not isinstance(built, Cell):
                    raise TypeError(f"cell must build an lstmkit.Cell, got {type(built).__name__}")
                self._adopt(built, "_l" + str(layer) + ("_reverse" if direction else ""))
            layer_input = self._cells[-1].recurrent_size * self.num_directions

    def _adopt(self, cell: Cell, suffix: str) -> None:
        """Register the cell's parameters on this layer under PyTorch's flat names."""
        if next(cell.buffers(), None) is not None:
            raise TypeError(f"{type(cell).__name__} has buffers; cells of a layer may hold parameters only")
        for path, parameter in cell.named_parameters():
            owner_path, _, leaf = path.rpartition(".")
            flat_name = path.replace(".", "_") + suffix
            self.register_parameter(flat_name, parameter)
            self._bindings.append((cell.get_submodule(owner_path), leaf, flat_name))
        self._cells.append(cell)

    def _bind(self) -> None:
        """Point every cell at this layer's weights as the module gives them now: read through the
        module on every call, so that a replaced parameter (``load_state_dict(assign=True)``,
        ``functional_call``), a ``torch.nn.utils.parametrize`` parametrization, spectral norm or
        the legacy weight norm is what the cells compute with."""
        widen = bf16_weights_widened()  # bfloat16 weights compute as float32 copies in reduced precision
        for owner, leaf, flat_name in self._bindings:
            value = getattr(self, flat_name)
            owner._parameters[leaf] = value.float() if widen and value.dtype == torch.bfloat16 else value

    def _bound(self) -> list[Tensor]:
        """The weights the cells are bound to (:meth:`_bind`), in ``torch.nn.LSTM``'s order."""
        return [owner._parameters[leaf] for owner, leaf, _ in self._bindings]

    @property
    def _flat_weights_names(self) -> list[str]:
        """The weights' names in ``torch.nn.LSTM``'s order (layer, direction, then w_ih, w_hh, b_ih, b_hh, ...)."""
        return [flat_name for _, _, flat_name in self._bindings]

    @property
    def _all_weights(self) -> list[list[str]]:
        """The weights' names grouped per layer and direction, as ``torch.nn.LSTM._all_weights``."""
        groups: dict[str, list[str]] = {}
        for _, leaf, flat_name in self._bindings:
            groups.setdefault(flat_name.removeprefix(leaf), []).append(flat_name)
        return list(groups.values())

    @property
    def _flat_weights(self) -> list[Tensor]:
        """The weights in ``torch.nn.LSTM``'s order, as the module gives them (parametrizations applied)."""
        return [getattr(self, name) for name in self._flat_weights_names]

    def reset_parameters(self) -> None:
        """Re-initialise every cell's parameters as the cell does at construction (``torch.nn``'s
        uniform ``(-1/sqrt(hidden_size), 1/sqrt(hidden_size))`` for the built-in weights, then the
        cells' ``forget_bias``, ``chrono_init``, ``recurrent_init``). A
        parametrised weight's original is re-initialised; one split into several originals (weight
        norm) gets torch.nn's uniform draw on each."""
        split = []
        for owner, leaf, flat_name in self._bindings:
            stored = self._stored(flat_name)
            if stored is None:
                split.append(flat_name)
                stored = getattr(self, flat_name).detach().clone()
            owner._parameters[leaf] = stored
        for cell in self._cells:
            cell.reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for flat_name in split:
                for original in self.parametrizations[flat_name].parameters():
                    original.uniform_(-bound, bound)
        self._bind()

    def _stored(self, flat_name: str) -> Tensor | None:
        """The tensor the module stores for a weight: the parameter, a parametrization's original, or
        ``None`` when a parametrization keeps several originals."""
        if parametrize.is_parametrized(self, flat_name):
            return getattr(self.parametrizations[flat_name], "original", None)
        stored = self._parameters.get(flat_name)
        return getattr(self, flat_name) if stored is None else stored

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        size = self._cells[-1].recurrent_size
        return size * 2 if self.bidirectional and self.merge_mode == "concat" else size

    def cell(self, layer: int = 0, direction: int = 0) -> Cell:
        """The cell of one layer and direction (0 forward, 1 reverse), bound to this layer's weights."""
        self._bind()
        return self._cells[layer * self.num_directions + direction]

    @property
    def cells(self) -> list[Cell]:
        """Every layer's cells, direction fastest (``l0``, ``l0_reverse``, ``l1``, ...), bound to this
        layer's weights."""
        self._bind()
        return list(self._cells)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters grouped per layer and direction, as ``torch.nn.LSTM.all_weights``."""
        return [list(cell.parameters()) for cell in self.cells]

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``torch.nn.LSTM``."""

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: StateArg = None,
        *,
        lengths: Sequence[int] | Tensor | None = None,
        mask: Tensor | None = None,
        return_gates: bool = False,
    ):
        if lengths is None and mask is None and not return_gates:
            key = plain_call.plan_key(self, input)
            if key is not None:
                plans = self.__dict__.setdefault("_plain_plans", {})
                chosen = plans[key] if key in plans else plans.setdefault(key, plain_call.plan(self, input))
                if chosen is not None:
                    return plain_call.run(self, chosen, input, hx)
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, Tensor):
            return self._forward(input, hx, lengths, mask, return_gates)  # which names the problem
        device = data.device.type
        autocast = torch.is_autocast_enabled(device)
        reduced, compute, result_dtype = self._precision(data, packed=isinstance(input, PackedSequence))
        if not (autocast or reduced):
            return self._forward(input, hx, lengths, mask, return_gates)
        with torch.autocast(device, enabled=False), reduced_precision(reduced):
            input, hx = cast_floats(input, compute), cast_floats(hx, compute)
            result = self._forward(input, hx, lengths, mask, return_gates)
        return self._cast_results(result, result_dtype, autocast)

    def _cast_results(self, result: tuple, dtype: torch.dtype | None, autocast: bool) -> tuple:
        """A call's results in ``dtype`` (``None``: as computed; :meth:`_precision`), ``autocast``
        telling a call under autocast (where a subclass may follow its torch.nn twin's quirks)."""
        return result if dtype is None else cast_floats(result, dtype)

    def _precision(self, data: Tensor, packed: bool = False) -> tuple[bool, torch.dtype, torch.dtype | None]:
        """How a call on ``data`` (a PackedSequence's if ``packed``) computes: whether in reduced
        precision (:func:`~lstmkit.engine.precision.reduced_precision`: bf16 GEMMs where the CPU has
        bf16 hardware), in which dtype, and the dtype its results are cast to (``None``: as computed).
        Under autocast the layer computes with its weights' dtype (float32 master weights) and
        autocast off. Reduced precision under bfloat16 autocast on the CPU, and for bfloat16 input to
        a bfloat16 layer, which then computes with float32 copies of its weights; and for a layer with
        int8 weights (dequantized to float32) where the CPU has bf16 hardware."""
        device, weights = data.device.type, self._weights_dtype()
        if torch.is_autocast_enabled(device):
            reduced = device == "cpu" and torch.get_autocast_dtype(device) == torch.bfloat16
            result_dtype = self.autocast_packed_output_dtype if packed else self.autocast_output_dtype
            result_dtype = result_dtype if reduced else None
        elif self._int8_weights():
            reduced, result_dtype = device == "cpu" and bf16_hardware(), torch.float32
        else:
            reduced = device == "cpu" and data.dtype == weights == torch.bfloat16
            result_dtype = torch.bfloat16 if reduced else None
        return reduced, torch.float32 if reduced and weights == torch.bfloat16 else weights, result_dtype

    def _int8_weights(self) -> bool:
        """Whether the layer stores its weight matrices in int8 (:func:`lstmkit.quantize_int8`). Asked
        five times a call: read from the module dictionaries directly (1.3 us; ``is_parametrized`` and
        indexing took 8 us, together a tenth of a one-step int8 call)."""
        parametrizations = self._modules.get("parametrizations")
        chain = None if parametrizations is None else parametrizations._modules.get(self._bindings[0][2])
        return chain is not None and isinstance(chain._modules.get("0"), Int8Weight)

    def _weights_dtype(self) -> torch.dtype:
        """The dtype of the layer's stored weights (of a parametrization's original; int8 weights: of
        their scales, the dtype they dequantize to, without dequantizing them)."""
        name = self._bindings[0][2]
        if self._int8_weights():
            return self.parametrizations[name].original1.dtype
        stored = self._stored(name)
        return (getattr(self, name) if stored is None else stored).dtype

    def _forward(self, input, hx, lengths, mask, return_gates):
        int8_weights = self._int8_weights()
        prepared = self._prepare(input, hx, lengths, mask, bind=not int8_weights)
        x, lengths, initial, valid, batched, batch_first, packed = prepared
        call = {"masked": mask is not None, "traced": return_gates, "lengths": lengths, "initial": initial}
        int8 = choose_int8(self, x, **call) if int8_weights else None
        if int8 is None and int8_weights:
            self._bind()  # the dequantizing path computes with the dequantized weights
        chosen = None if int8 else choose_layer(self, x, **call)
        traces: dict[str, dict[str, Tensor]] = {}
        if int8 is not None:
            output, states = int8_loop.run_layers(self, x, initial, valid, mask is not None and not self.bidirectional)
        elif chosen is not None:
            # under bfloat16 GEMMs torch's kernels run as torch.nn's do under autocast (their bfloat16
            # results are cast once, by forward)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16_gemms_active()):
                output, states = torch_engine.run_layers(self, x, initial, lengths, self._bound())
        else:
            output, states, traces = self._run_cells(x, initial, valid, mask is not None, return_gates)
            traces = {
                name: {key: self._to_layout(value, batched, self.batch_first) for key, value in trace.items()}
                for name, trace in traces.items()
            }
        if packed is not None:
            return_output, state = repack(output, packed, lengths), self._finish(output, states, True, False)[1]
        else:
            return_output, state = self._finish(output, states, batched, batch_first)
        return (return_output, state, traces) if return_gates else (return_output, state)

    def _finish(
        self, output: Tensor, states: tuple[Tensor, ...], batched: bool, batch_first: bool
    ) -> tuple[Tensor, Tensor | State]:
        """A call's time-major output and final states ``(L*D, B, size)`` as it returns them: in the
        input's layout, the states without the batch dimension for an unbatched input, ``h_n`` alone
        for a single-state cell."""
        if not batched:
            states = tuple(s.squeeze(1) for s in states)
        return self._to_layout(output, batched, batch_first), states[0] if len(states) == 1 else states

    def _prepare(self, input, hx, lengths, mask, *, bind: bool = True) -> tuple:
        """The call's checked arguments, time-major (see :func:`~lstmkit.layers.arguments.prepare_call`).
        ``bind=False``, for a layer with int8 weights, leaves the cells unbound (binding dequantizes
        every weight, which the int8 loop never reads) and checks the input against the scales' dtype."""
        dtype = None
        if bind:
            self._bind()
        else:
            dtype = self._weights_dtype()
        layers = self.num_layers * self.num_directions
        return prepare_call(
            input, hx, lengths, mask, self._cells[0], self.input_size, self.batch_first, layers, dtype=dtype
        )

    def _run_cells(
        self, x: Tensor, initial: State | None, valid: Tensor | None, masked: bool, trace: bool
    ) -> tuple[Tensor, State, dict[str, dict[str, Tensor]]]:
        """Drive each layer's cells over time-major ``x``; returns the output, the final states
        ``(L*D, B, size)`` and the gate traces (time-major)."""
        batch_size = x.shape[1]
        final_states: list[list[Tensor]] = [[] for _ in self._cells[0].state_names]
        traces: dict[str, dict[str, Tensor]] = {}
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self._cells[index]
                state = cell.initial_state(batch_size, x) if initial is None else tuple(s[index] for s in initial)
                result = run_sequence(
                    cell,
                    layer_input,
                    state,
                    engine=self.engine,
                    valid=valid,
                    carry_output=masked and not self.bidirectional,
                    reverse=direction == 1,
                    recurrent_mask=self._recurrent_dropout_mask(batch_size, cell.recurrent_size, x),
                    zoneout=self.zoneout,
                    training=self.training,
                    trace=trace,
                )
                outputs.append(result.output)
                for collected, final in zip(final_states, result.state, strict=True):
                    collected.append(final)
                if result.trace is not None:
                    traces[f"l{layer}" + ("_reverse" if direction else "")] = result.trace
            last = layer == self.num_layers - 1
            if len(outputs) == 1:
                layer_input = outputs[0]
            else:
                layer_input = merge_directions(*outputs, self.merge_mode if last else "concat")
            if not last and self.dropout and self.training:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, tuple(torch.stack(collected) for collected in final_states), traces

    _to_layout = staticmethod(to_layout)

    def _recurrent_dropout_mask(self, batch_size: int, size: int, like: Tensor) -> Tensor | None:
        if not (self.recurrent_dropout and self.training):
            return None
        return dropout_mask(like.new_empty(batch_size, size), self.recurrent_dropout)

    def extra_repr(self) -> str:
        cell = self._cells[0]
        text = f"{type(cell).__name__}, {self.input_size}, {self.hidden_size}"
        return text + self._options_repr()

    def _options_repr(self) -> str:
        defaults = {
            "num_layers": 1,
            "bias": True,
            "batch_first": False,
            "dropout": 0.0,
            "bidirectional": False,
            "merge_mode": "concat",
            "recurrent_dropout": 0.0,
            "zoneout": 0.0,
        }
        text = "".join(
            f", {name}={getattr(self, name)!r}" for name, default in defaults.items() if getattr(self, name) != default
        )
        init = self._cells[0].gate_init.describe()
        return text + ", " + init if init else text
