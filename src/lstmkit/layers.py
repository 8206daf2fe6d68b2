"""Layers that drive cells over time: :class:`Recurrent` for any cell, and drop-ins for
``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``.

Parameters are registered under PyTorch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...),
so ``state_dict`` and ``load_state_dict`` interchange with ``torch.nn`` modules. Each layer and
direction has its own cell; the cells see the layer's parameters, they do not own copies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .cells import Cell, GRUCell, LSTMCell, RNNCell, State
from .engine import choose_layer, int8_vnni, resolve_engine, run_sequence, torch_engine
from .engine.dispatch import choose_int8
from .engine.precision import Int8Weight, bf16_gemms, bf16_gemms_active, bf16_hardware, cast_floats
from .validation import ArgumentError, ShapeError, check_lengths, check_mask, check_tensor

MERGE_MODES = ("concat", "sum", "mul", "ave")

StateArg = Tensor | Sequence[Tensor] | None


def merge_directions(forward: Tensor, backward: Tensor, merge_mode: str) -> Tensor:
    """Combine the two directions' outputs: concat, sum, mul or ave (Keras' merge modes)."""
    if merge_mode == "concat":
        return torch.cat((forward, backward), dim=-1)
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    if merge_mode == "ave":
        return (forward + backward) / 2
    raise ValueError(f"unknown merge_mode {merge_mode!r}: expected one of {MERGE_MODES}")


def _check_probability(name: str, value: float, upper_inclusive: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (0 <= value < 1 or (upper_inclusive and value == 1)):
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
    return float(value)


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
    kernels run their GEMMs on bfloat16 operands (gates, cell state and weight gradients in
    float32; :mod:`lstmkit.engine.precision`). Results come out in the dtype torch.nn's give under
    autocast: bfloat16 (float32 for an LSTM given a PackedSequence, and for :class:`GRU`).
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
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"unknown merge_mode {merge_mode!r}: expected one of {MERGE_MODES}")
        self.dropout = _check_probability("dropout", dropout, upper_inclusive=True)
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout applies between layers, so it has no effect with num_layers=1 "
                f"(got dropout={dropout}); see recurrent_dropout and zoneout",
                stacklevel=2,
            )
        self.recurrent_dropout = _check_probability("recurrent_dropout", recurrent_dropout, upper_inclusive=False)
        self.zoneout = _check_probability("zoneout", zoneout, upper_inclusive=False)
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
        widen = bf16_gemms_active()  # bfloat16 weights compute as float32 copies under bf16 GEMMs
        for owner, leaf, flat_name in self._bindings:
            value = getattr(self, flat_name)
            owner._parameters[leaf] = value.float() if widen and value.dtype == torch.bfloat16 else value

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
        return self._parameters.get(flat_name, getattr(self, flat_name))

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
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, Tensor):
            return self._forward(input, hx, lengths, mask, return_gates)  # which names the problem
        device = data.device.type
        autocast = torch.is_autocast_enabled(device)
        bf16, compute, result_dtype = self._precision(data, packed=isinstance(input, PackedSequence))
        if not (autocast or bf16):
            return self._forward(input, hx, lengths, mask, return_gates)
        with torch.autocast(device, enabled=False), bf16_gemms(bf16):
            input, hx = cast_floats(input, compute), cast_floats(hx, compute)
            result = self._forward(input, hx, lengths, mask, return_gates)
        return result if result_dtype is None else cast_floats(result, result_dtype)

    def _precision(self, data: Tensor, packed: bool = False) -> tuple[bool, torch.dtype, torch.dtype | None]:
        """How a call on ``data`` (a PackedSequence's if ``packed``) computes: whether with bf16 GEMMs,
        in which dtype, and the dtype its results are cast to (``None``: as computed). Under autocast
        the layer computes with its weights' dtype (float32 master weights) and autocast off. bf16
        GEMMs (see the class docstring) under bfloat16 autocast on the CPU, and for bfloat16 input to
        a bfloat16 layer, which then computes with float32 copies of its weights; and for a layer with
        int8 weights (dequantized to float32) where the CPU has bf16 hardware."""
        device, weights = data.device.type, self._weights_dtype()
        if torch.is_autocast_enabled(device):
            bf16 = device == "cpu" and torch.get_autocast_dtype(device) == torch.bfloat16
            result_dtype = self.autocast_packed_output_dtype if packed else self.autocast_output_dtype
            result_dtype = result_dtype if bf16 else None
        elif self._int8_weights():
            bf16, result_dtype = device == "cpu" and bf16_hardware(), torch.float32
        else:
            bf16 = device == "cpu" and data.dtype == weights == torch.bfloat16
            result_dtype = torch.bfloat16 if bf16 else None
        return bf16, torch.float32 if bf16 and weights == torch.bfloat16 else weights, result_dtype

    def _int8_weights(self) -> bool:
        """Whether the layer stores its weight matrices in int8 (:func:`lstmkit.quantize_int8`)."""
        name = self._flat_weights_names[0]
        return parametrize.is_parametrized(self, name) and isinstance(self.parametrizations[name][0], Int8Weight)

    def _weights_dtype(self) -> torch.dtype:
        """The dtype of the layer's stored weights (of a parametrization's original)."""
        name = self._flat_weights_names[0]
        stored = self._stored(name)
        return (getattr(self, name) if stored is None else stored).dtype

    def _forward(self, input, hx, lengths, mask, return_gates):
        x, lengths, initial, valid, batched, batch_first, packed = self._prepare(input, hx, lengths, mask)
        call = {"masked": mask is not None, "traced": return_gates, "lengths": lengths, "initial": initial}
        int8 = choose_int8(self, x, **call)
        chosen = None if int8 else choose_layer(self, x, **call)
        traces: dict[str, dict[str, Tensor]] = {}
        if int8 is not None:
            output, states = int8_vnni.run_layers(self, x, initial)
        elif chosen is not None:
            # under bfloat16 GEMMs torch's kernels run as torch.nn's do under autocast (their bfloat16
            # results are cast once, by forward)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16_gemms_active()):
                output, states = torch_engine.run_layers(self, x, initial, lengths)
        else:
            output, states, traces = self._run_cells(x, initial, valid, mask is not None, return_gates)
            traces = {
                name: {key: self._to_layout(value, batched, self.batch_first) for key, value in trace.items()}
                for name, trace in traces.items()
            }
        if not batched:
            states = tuple(s.squeeze(1) for s in states)
        state: Tensor | State = states[0] if len(states) == 1 else states
        if packed is not None:
            return_output: Tensor | PackedSequence = _repack(output, packed, lengths)
        else:
            return_output = self._to_layout(output, batched, batch_first)
        return (return_output, state, traces) if return_gates else (return_output, state)

    def _prepare(self, input, hx, lengths, mask) -> tuple:
        """The call's checked arguments: time-major input ``(T, B, I)``, lengths as a tensor, the
        initial states ``(L*D, B, size)`` or ``None``, the valid-step mask ``(T, B)`` or ``None``,
        whether the input is batched, whether it is batch-first, and the PackedSequence if one came."""
        self._bind()
        dtype = self._cells[0].weight_ih.dtype
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None or mask is not None:
                raise ValueError("a PackedSequence carries its own lengths; do not pass lengths= or mask=")
            check_tensor("input", packed.data, dtype)
            x, lengths = pad_packed_sequence(packed)
            batched, batch_first = True, False
        else:
            x = check_tensor("input", input, dtype)
            if x.dim() not in (2, 3):
                raise ValueError(
                    f"expected input of rank 3 {self._layout()} or rank 2 (seq_len, input_size) "
                    f"for one unbatched sequence, got shape {tuple(x.shape)}"
                )
            batched, batch_first = x.dim() == 3, self.batch_first
            x = (x.transpose(0, 1) if batch_first else x) if batched else x.unsqueeze(1)
        steps, batch_size, features = x.shape
        if features != self.input_size:
            raise ShapeError(
                f"expected input feature size {self.input_size}, got {features} (input shape {tuple(x.shape)})"
            )
        if steps == 0:
            raise ShapeError("empty sequence: input has 0 time steps")
        if lengths is not None and mask is not None:
            raise ValueError("pass either lengths= (zero outputs past each length) or mask= (Keras masking), not both")
        valid = None
        if lengths is not None:
            lengths = check_lengths(lengths, batch_size, steps, x.device)
            valid = torch.arange(steps, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)
        if mask is not None:
            valid = self._time_major_mask(mask, steps, batch_size, batched)
        initial = self._initial_states(hx, batch_size, batched, x)
        return x, lengths, initial, valid, batched, batch_first, packed

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

    def _layout(self) -> str:
        return "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"

    @staticmethod
    def _to_layout(tensor: Tensor, batched: bool, batch_first: bool) -> Tensor:
        if not batched:
            return tensor.squeeze(1)
        return tensor.transpose(0, 1) if batch_first else tensor

    def _time_major_mask(self, mask: Tensor, steps: int, batch_size: int, batched: bool) -> Tensor:
        if not batched:
            return check_mask(mask, (steps,), "(seq_len,) for an unbatched input").unsqueeze(1)
        if self.batch_first:
            return check_mask(mask, (batch_size, steps), "(batch, seq_len), like the input without features").T
        return check_mask(mask, (steps, batch_size), "(seq_len, batch), like the input without features")

    def _initial_states(self, hx: StateArg, batch_size: int, batched: bool, like: Tensor) -> State | None:
        if hx is None:
            return None
        cell = self._cells[0]
        states = (hx,) if isinstance(hx, Tensor) else tuple(hx)
        if len(states) != len(cell.state_names):
            expected = "a tensor h_0" if len(cell.state_names) == 1 else f"a tuple {cell.state_names}"
            raise ValueError(f"hx must be {expected} for {type(cell).__name__}, got {len(states)} tensor(s)")
        layers = self.num_layers * self.num_directions
        checked = []
        for name, size, state in zip(cell.state_names, cell.state_sizes, states, strict=True):
            state = check_tensor(f"initial state {name}_0", state, like.dtype)
            expected = (layers, batch_size, size) if batched else (layers, size)
            if tuple(state.shape) != expected:
                raise ShapeError(
                    f"expected initial state {name}_0 of shape {expected} "
                    f"(num_layers * num_directions, batch, {name} size), got {tuple(state.shape)}"
                )
            checked.append(state if batched else state.unsqueeze(1))
        return tuple(checked)

    def _recurrent_dropout_mask(self, batch_size: int, size: int, like: Tensor) -> Tensor | None:
        if not (self.recurrent_dropout and self.training):
            return None
        keep = 1.0 - self.recurrent_dropout
        return like.new_empty(batch_size, size).bernoulli_(keep) / keep

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


def _repack(output: Tensor, packed: PackedSequence, lengths: Tensor) -> PackedSequence:
    """Pack a padded time-major output exactly as the input was packed (same batch order)."""
    if packed.sorted_indices is not None:
        output = output.index_select(1, packed.sorted_indices)
        lengths = lengths.index_select(0, packed.sorted_indices.to(lengths.device))
    data = pack_padded_sequence(output, lengths.cpu(), enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)


def _recurrent_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A drop-in's ``__init__`` ``locals()`` as keyword arguments of :class:`Recurrent`: those it
    names, its own (``proj_size``, ``nonlinearity``: cell arguments) and the ``extras``."""
    own = {k: v for k, v in arguments.items() if k not in ("self", "__class__", "extras")}
    if "proj_size" in arguments["extras"]:
        raise ArgumentError("proj_size argument is only supported for LSTM, not RNN or GRU")
    return own | arguments["extras"]


class LSTM(Recurrent):
    """Drop-in for ``torch.nn.LSTM``: same arguments, ``state_dict`` keys and outputs, plus
    ``lengths=``, ``mask=``, ``merge_mode``, ``recurrent_dropout``, ``zoneout``, ``return_gates``
    and the initialisations ``forget_bias``, ``chrono_init``, ``recurrent_init`` (:mod:`lstmkit.init`).

        >>> import torch, lstmkit
        >>> lstm = lstmkit.LSTM(10, 20, num_layers=2, bidirectional=True)
        >>> ref = torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True)
        >>> _ = ref.load_state_dict(lstm.state_dict())
        >>> x = torch.randn(7, 3, 10)
        >>> torch.allclose(lstm(x)[0], ref(x)[0], atol=1e-6)
        True
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **extras: object,
    ) -> None:
        super().__init__(LSTMCell, **_recurrent_arguments(locals()))
        self.proj_size = proj_size
        self.mode = "LSTM"

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + self._options_repr()
        return text + f", proj_size={self.proj_size}" if self.proj_size else text


class GRU(Recurrent):
    """Drop-in for ``torch.nn.GRU``; ``reset_after=False`` gives the original Cho et al. candidate;
    ``forget_bias`` and ``chrono_init`` set the update gate ``z``'s bias (:mod:`lstmkit.init`).

    >>> import torch, lstmkit
    >>> out, h_n = lstmkit.GRU(4, 6, batch_first=True)(torch.randn(2, 5, 4))
    >>> tuple(out.shape), tuple(h_n.shape)
    ((2, 5, 6), (1, 2, 6))
    """

    autocast_output_dtype = autocast_packed_output_dtype = torch.float32  # as torch.nn.GRU's

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **extras: object,
    ) -> None:
        super().__init__(GRUCell, **_recurrent_arguments(locals()))
        self.mode = "GRU"

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + self._options_repr()
        return text if self._cells[0].reset_after else text + ", reset_after=False"


class RNN(Recurrent):
    """Drop-in for ``torch.nn.RNN`` (``nonlinearity`` is its fourth argument, as in torch).

    >>> import torch, lstmkit
    >>> out, h_n = lstmkit.RNN(4, 6, nonlinearity="relu")(torch.randn(5, 2, 4))
    >>> tuple(out.shape)
    (5, 2, 6)
    """

    autocast_output_dtype = autocast_packed_output_dtype = torch.bfloat16  # as torch.nn.RNN's

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **extras: object,
    ) -> None:
        super().__init__(RNNCell, **_recurrent_arguments(locals()))
        self.nonlinearity = self._cells[0].nonlinearity
        self.mode = f"RNN_{self.nonlinearity.upper()}"  # torch.nn.RNN's modes: RNN_TANH, RNN_RELU

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + self._options_repr()
        return text if self.nonlinearity == "tanh" else text + f", nonlinearity={self.nonlinearity!r}"
