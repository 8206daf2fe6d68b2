"""Plain NumPy float64 reference of the cell equations and of the masked / lengths time loop.

Written from the equations in lstmkit's docstrings (and torch's documentation), not from its code,
and it never imports lstmkit: a parameter set is a dict of NumPy arrays named as in ``torch.nn``
(``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``weight_hr``, ...; biases may be absent).

Every step function has the signature ``step(p, x, state, h_rec=None, **options)`` and returns
``(new_state, gates)`` where ``new_state`` is a tuple whose first entry is ``h`` and ``gates`` maps
gate names to their activations. ``h_rec`` is the hidden state that enters the recurrent matrix
multiply (``h`` times a recurrent-dropout mask); by default ``state[0]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Array = np.ndarray
Params = dict[str, Array]
Step = Callable[..., tuple[tuple[Array, ...], dict[str, Array]]]


# ---------------------------------------------------------------------------------------------
# elementary functions


def sigmoid(v: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-v))


def affine(v: Array, weight: Array, bias: Array | None = None) -> Array:
    """``weight @ v + bias`` for a batch of row vectors ``v``."""
    out = v @ weight.T
    return out if bias is None else out + bias


def layer_norm(v: Array, gain: Array, shift: Array | None = None, eps: float = 1e-5) -> Array:
    """Normalise over the last axis with the biased variance, then scale (and shift)."""
    mean = v.mean(axis=-1, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=-1, keepdims=True)
    out = (v - mean) / np.sqrt(var + eps) * gain
    return out if shift is None else out + shift


def _blocks(v: Array, count: int) -> list[Array]:
    size = v.shape[-1] // count
    return [v[..., k * size : (k + 1) * size] for k in range(count)]


def _bias(p: Params, name: str, rows: slice | None = None) -> Array | None:
    b = p.get(name)
    if b is None or rows is None:
        return b
    return b[rows]


# ---------------------------------------------------------------------------------------------
# cells: one step each


def rnn_step(p: Params, x: Array, state, h_rec=None, nonlinearity: str = "tanh"):
    """Elman: ``h_t = act(W_ih x + b_ih + W_hh h + b_hh)``."""
    (h,) = state
    h_rec = h if h_rec is None else h_rec
    pre = affine(x, p["weight_ih"], p.get("bias_ih")) + affine(h_rec, p["weight_hh"], p.get("bias_hh"))
    if nonlinearity == "tanh":
        h_new = np.tanh(pre)
    elif nonlinearity == "relu":
        h_new = np.maximum(pre, 0.0)
    else:
        raise ValueError(nonlinearity)
    return (h_new,), {"h": h_new}


def lstm_step(p: Params, x: Array, state, h_rec=None):
    """LSTM, gates i, f, g, o; ``c = f c + i g``, ``h = o tanh(c)``, then ``h = W_hr h`` if projected."""
    h, c = state
    h_rec = h if h_rec is None else h_rec
    pre = affine(x, p["weight_ih"], p.get("bias_ih")) + affine(h_rec, p["weight_hh"], p.get("bias_hh"))
    a_i, a_f, a_g, a_o = _blocks(pre, 4)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    if "weight_hr" in p:
        h_new = h_new @ p["weight_hr"].T
    return (h_new, c_new), {"i": i, "f": f, "g": g, "o": o}


def peephole_lstm_step(p: Params, x: Array, state, h_rec=None):
    """Gers & Schmidhuber: i, f peek at ``c_{t-1}``, o peeks at ``c_t`` through diagonal weights."""
    h, c = state
    h_rec = h if h_rec is None else h_rec
    pre = affine(x, p["weight_ih"], p.get("bias_ih")) + affine(h_rec, p["weight_hh"], p.get("bias_hh"))
    a_i, a_f, a_g, a_o = _blocks(pre, 4)
    i = sigmoid(a_i + p["weight_ci"] * c)
    f = sigmoid(a_f + p["weight_cf"] * c)
    g = np.tanh(a_g)
    c_new = f * c + i * g
    o = sigmoid(a_o + p["weight_co"] * c_new)
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), {"i": i, "f": f, "g": g, "o": o}


def gru_step(p: Params, x: Array, state, h_rec=None, reset_after: bool = True):
    """GRU, gates r, z, n; ``h_t = (1 - z) n + z h_{t-1}``.

    reset_after: ``n = tanh(W_n x + b_in + r (U_n h + b_hn))``; else ``n = tanh(W_n x + b_in + U_n (r h) + b_hn)``.
    """
    (h,) = state
    h_rec = h if h_rec is None else h_rec
    size = h.shape[-1]
    rz, nn_ = slice(0, 2 * size), slice(2 * size, 3 * size)
    x_rz = affine(x, p["weight_ih"][rz], _bias(p, "bias_ih", rz))
    x_n = affine(x, p["weight_ih"][nn_], _bias(p, "bias_ih", nn_))
    h_rz = affine(h_rec, p["weight_hh"][rz], _bias(p, "bias_hh", rz))
    r = sigmoid(x_rz[..., :size] + h_rz[..., :size])
    z = sigmoid(x_rz[..., size:] + h_rz[..., size:])
    if reset_after:
        n = np.tanh(x_n + r * affine(h_rec, p["weight_hh"][nn_], _bias(p, "bias_hh", nn_)))
    else:
        n = np.tanh(x_n + affine(r * h_rec, p["weight_hh"][nn_], _bias(p, "bias_hh", nn_)))
    h_new = (1.0 - z) * n + z * h
    return (h_new,), {"r": r, "z": z, "n": n}


def layernorm_lstm_step(p: Params, x: Array, state, h_rec=None, eps: float = 1e-5):
    """``gates = LN(W_ih x) + b_ih + LN(W_hh h) + b_hh``; ``c = f c + i g``; ``h = o tanh(LN(c))``."""
    h, c = state
    h_rec = h if h_rec is None else h_rec
    xg = layer_norm(x @ p["weight_ih"].T, p["ln_weight_ih"], eps=eps)
    hg = layer_norm(h_rec @ p["weight_hh"].T, p["ln_weight_hh"], eps=eps)
    if "bias_ih" in p:
        xg = xg + p["bias_ih"]
        hg = hg + p["bias_hh"]
    a_i, a_f, a_g, a_o = _blocks(xg + hg, 4)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
    c_new = f * c + i * g
    h_new = o * np.tanh(layer_norm(c_new, p["ln_weight_c"], p["ln_bias_c"], eps=eps))
    return (h_new, c_new), {"i": i, "f": f, "g": g, "o": o}


def cifg_step(p: Params, x: Array, state, h_rec=None):
    """Coupled input-forget gate LSTM: gates i, g, o and ``f = 1 - i``."""
    h, c = state
    h_rec = h if h_rec is None else h_rec
    pre = affine(x, p["weight_ih"], p.get("bias_ih")) + affine(h_rec, p["weight_hh"], p.get("bias_hh"))
    a_i, a_g, a_o = _blocks(pre, 3)
    i, g, o = sigmoid(a_i), np.tanh(a_g), sigmoid(a_o)
    c_new = (1.0 - i) * c + i * g
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), {"i": i, "g": g, "o": o}


STATE_NAMES = {
    rnn_step: ("h",),
    gru_step: ("h",),
    lstm_step: ("h", "c"),
    peephole_lstm_step: ("h", "c"),
    layernorm_lstm_step: ("h", "c"),
    cifg_step: ("h", "c"),
}


# ---------------------------------------------------------------------------------------------
# time loop


def valid_from_lengths(lengths: Sequence[int], steps: int) -> Array:
    """``(T, B)`` boolean: step ``t`` of sequence ``b`` is real iff ``t < lengths[b]``."""
    return np.arange(steps)[:, None] < np.asarray(lengths)[None, :]


def run_direction(
    step: Step,
    p: Params,
    x: Array,
    state: tuple[Array, ...],
    *,
    valid: Array | None = None,
    carry_output: bool = False,
    reverse: bool = False,
    h_mask: Array | None = None,
    zoneout: float = 0.0,
    **options,
):
    """One direction of one layer over time-major ``x`` ``(T, B, I)``.

    At an invalid step (``valid[t, b]`` false) the state is carried; the output is zero, or with
    ``carry_output`` (Keras masking) the output of the previously processed step (zero before any).
    ``h_mask`` multiplies ``h`` before the recurrent multiply (same mask at every step).
    ``zoneout`` (evaluation): each state becomes ``zoneout * old + (1 - zoneout) * new``.
    Returns ``(outputs (T, B, H), final_state, trace)`` with ``trace[name]`` of shape ``(T, B, size)``.
    """
    steps = x.shape[0]
    outputs: list[Array | None] = [None] * steps
    gate_trace: dict[str, list[Array | None]] = {}
    state_trace: list[list[Array | None]] = [[None] * steps for _ in state]
    previous = np.zeros_like(state[0])
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        h_rec = state[0] if h_mask is None else state[0] * h_mask
        new, gates = step(p, x[t], state, h_rec=h_rec, **options)
        if zoneout:
            new = tuple(zoneout * old + (1.0 - zoneout) * fresh for old, fresh in zip(state, new, strict=True))
        out = new[0]
        if valid is not None:
            keep = np.asarray(valid[t], dtype=bool)[:, None]
            new = tuple(np.where(keep, fresh, old) for fresh, old in zip(new, state, strict=True))
            out = np.where(keep, out, previous if carry_output else 0.0)
        state = tuple(new)
        previous = out
        outputs[t] = out
        for name, value in gates.items():
            gate_trace.setdefault(name, [None] * steps)[t] = value
        for k, value in enumerate(state):
            state_trace[k][t] = value
    trace = {name: np.stack(values) for name, values in gate_trace.items()}
    trace["__states__"] = [np.stack(values) for values in state_trace]
    return np.stack(outputs), state, trace


def merge(forward: Array, backward: Array, mode: str) -> Array:
    if mode == "concat":
        return np.concatenate([forward, backward], axis=-1)
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    if mode == "ave":
        return (forward + backward) / 2.0
    raise ValueError(mode)


def run_stack(
    step: Step,
    params: dict[str, Params],
    x: Array,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    initial: list[tuple[Array, ...]] | None = None,
    zero_state: Callable[[int], tuple[Array, ...]] | None = None,
    valid: Array | None = None,
    carry_output: bool = False,
    merge_mode: str = "concat",
    h_masks: list[Array | None] | None = None,
    zoneout: float = 0.0,
    **options,
):
    """A stack of layers (no dropout between layers) over time-major ``x``.

    ``params[suffix]`` for suffix ``_l{k}`` and ``_l{k}_reverse``; ``initial[index]`` (index =
    layer * directions + direction) or ``zero_state(index)`` gives each start state.
    Returns ``(output, finals, traces)``: ``finals[index]`` is a state tuple, ``traces[name]`` a dict
    keyed ``l{k}`` / ``l{k}_reverse``.
    """
    directions = 2 if bidirectional else 1
    finals: list[tuple[Array, ...]] = []
    traces: dict[str, dict] = {}
    layer_input = x
    for layer in range(num_layers):
        outs = []
        for direction in range(directions):
            index = layer * directions + direction
            name = f"l{layer}" + ("_reverse" if direction else "")
            start = initial[index] if initial is not None else zero_state(index)
            out, final, trace = run_direction(
                step,
                params["_" + name],
                layer_input,
                start,
                valid=valid,
                carry_output=carry_output,
                reverse=direction == 1,
                h_mask=None if h_masks is None else h_masks[index],
                zoneout=zoneout,
                **options,
            )
            outs.append(out)
            finals.append(final)
            traces[name] = trace
        last = layer == num_layers - 1
        layer_input = outs[0] if directions == 1 else merge(*outs, merge_mode if last else "concat")
    return layer_input, finals, traces


# ---------------------------------------------------------------------------------------------
# reading parameters (of any torch module) as NumPy


def to_numpy(tensor) -> Array:
    return tensor.detach().cpu().double().numpy()


def cell_params(module) -> Params:
    """A one-cell module's parameters by name (``torch.nn.*Cell`` or an lstmkit cell)."""
    return {name: to_numpy(value) for name, value in module.named_parameters()}


def layer_params(module, num_layers: int, bidirectional: bool) -> dict[str, Params]:
    """A layer's flat parameters (``weight_ih_l0_reverse``, ...) grouped by suffix, suffix removed."""
    grouped: dict[str, Params] = {}
    for layer in range(num_layers):
        for direction in range(2 if bidirectional else 1):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            grouped[suffix] = {
                name[: -len(suffix)]: to_numpy(value)
                for name, value in module.named_parameters()
                if name.endswith(suffix)
            }
    return grouped
