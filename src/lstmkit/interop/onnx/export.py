"""``export_onnx``: write a module as an ONNX graph, check it, run it in onnxruntime against the module."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .common import BATCH, INSTALL_HINT, Axes, ExportError, check_opset
from .engines import dynamic_sequence_problems, traceable_engine
from .inputs import (
    _Adapter,
    _is_sequence,
    _output_axes,
    _output_names,
    _resized,
    _run,
    _sizes,
    _Slot,
    _slots,
)
from .scan import collecting_scans, write_scan_bodies


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, the graph's input and output names in order, the
    dynamic axes of each (``{axis: "batch" | "sequence"}``), the engine the layers ran on during
    the export, and the ``(batch, sequence)`` sizes onnxruntime was checked on.

    >>> OnnxExport(Path("m.onnx"), ["input"], ["output"], {"input": {0: "batch"}}, False, "reference").engine
    'reference'
    """

    path: Path
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, Axes]
    dynamic_sequence: bool
    engine: str
    verified: list[tuple[int, int | None]] = field(default_factory=list)
    max_difference: float | None = None


def export_onnx(
    module: nn.Module,
    example_input: Any,
    path: str | Path,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    dynamic_sequence: bool = True,
    opset_version: int | None = None,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> OnnxExport:
    """Write ``module`` as an ONNX graph to ``path`` and check it (see the module docstring).

    Args:
        module: an lstmkit layer, a Keras-semantics layer, a task model or any module built from them
            whose ``forward`` takes tensors (or tuples of tensors, such as ``hx``) and returns tensors
            or nested tuples of them.
        example_input: the positional arguments: a tensor or a tuple of them (``None`` for an
            argument left at its default). ``example_kwargs``: keyword arguments, e.g.
            ``{"lengths": torch.tensor([5, 3])}``. Their values only matter for the checks.
        input_names: names of the flat input tensors (default: ``forward``'s parameter names;
            ``h_0``/``c_0`` for a layer's initial state). ``output_names``: default ``output``,
            ``h_n``, ``c_n`` for lstmkit layers, the model's ``onnx_output_names`` if it has them,
            else ``output_0``, ``output_1_0``, ... by position.
        dynamic_axes: ``{input name: {axis: "batch" | "sequence"}}`` for inputs whose layout is not
            the default (batch-first ``(batch, sequence, ...)``, a layer's own ``batch_first``,
            ``(batch,)`` for lengths, ``(layers, batch, size)`` for states). Output axes are found
            by running the module with another batch size and sequence length.
        dynamic_sequence: export ONNX recurrent operators and ``Scan`` loops that take any sequence
            length (``True``) or unroll the reference loop over the example's length (``False``; the
            way for masks).
        opset_version: the ONNX opset, 11 to 20 (:data:`OPSETS`; default: torch's, 20).
        verify: run the graph in onnxruntime on the example and on other batch sizes (and sequence
            lengths) and compare with the module to ``rtol``/``atol``; raises :class:`ExportError`
            when they differ. Needs onnxruntime.

    Returns an :class:`OnnxExport`. Raises :class:`ExportError` naming the part that cannot export.
    """
    check_opset(opset_version)
    try:
        import onnx  # noqa: F401  (torch's exporter writes the file through it)
    except ImportError as error:
        raise ImportError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from error
    path = Path(path)
    if isinstance(example_input, torch.nn.utils.rnn.PackedSequence):
        raise ExportError("a PackedSequence does not export: pass the padded tensor and lengths= instead")
    slots = _slots(module, example_input, example_kwargs, input_names, dynamic_axes)
    if not dynamic_sequence:
        for item in (i for slot in slots for i in slot.inputs):
            item.axes = {axis: label for axis, label in item.axes.items() if not _is_sequence(label)}
    for item in (i for slot in slots for i in slot.inputs):
        if "length" in item.name and not item.tensor.is_floating_point() and bool((item.tensor < 1).any()):
            raise ExportError(
                f"example input {item.name!r} has lengths below 1 ({item.tensor.tolist()}): give an example whose "
                "lengths are at least 1 (the exported graph accepts 0 at run time)"
            )
    engine = "torch" if dynamic_sequence else "reference"
    sizes = _sizes(slots)
    flat = tuple(item.tensor for slot in slots for item in slot.inputs)
    with _temporary_next_to(path) as written:
        with traceable_engine(module, engine):
            result = _describe_export(module, slots, sizes, path, output_names, dynamic_sequence, engine)
            with collecting_scans() as scans:
                _write(_Adapter(module, slots), flat, written, result, opset_version)
            if scans:
                write_scan_bodies(written, scans, opset_version)
        _check_graph(written)
        if verify:
            _verify(module, slots, sizes, result, written, rtol, atol)
        os.replace(written, path)
    return result


def _describe_export(
    module: nn.Module,
    slots: list[_Slot],
    sizes: dict[str, int],
    path: Path,
    output_names: Sequence[str] | None,
    dynamic_sequence: bool,
    engine: str,
) -> OnnxExport:
    """The export's names and dynamic axes, from running ``module`` (on its traceable engine) on the
    example and on inputs of other sizes; raises :class:`ExportError` for what cannot export."""
    problems = dynamic_sequence_problems(module)
    if problems:
        raise ExportError(
            f"cannot export: {'; '.join(problems)}. Build the layer with stateful=False and give the state as an "
            "input (initial_state) instead"
        )
    try:
        outputs = _run(module, slots, [item.tensor for slot in slots for item in slot.inputs])
        axes = _output_axes(module, slots, sizes)
    except ExportError:
        raise
    except ValueError as error:
        if "engine='torch' cannot be used" in str(error):
            raise ExportError(
                f"cannot export with a dynamic sequence length: {error}. Export with dynamic_sequence=False"
            ) from None
        raise
    names = list(output_names) if output_names is not None else _output_names(module, [p for p, _ in outputs])
    if len(names) != len(outputs):
        raise ExportError(f"got {len(names)} output_names for {len(outputs)} output tensors")
    in_names = [item.name for slot in slots for item in slot.inputs]
    if set(in_names) & set(names):
        raise ExportError(f"input and output names overlap: {sorted(set(in_names) & set(names))}")
    all_axes = {item.name: item.axes for slot in slots for item in slot.inputs}
    all_axes.update(dict(zip(names, axes, strict=True)))
    return OnnxExport(path, in_names, names, {k: v for k, v in all_axes.items() if v}, dynamic_sequence, engine)


@contextlib.contextmanager
def _temporary_next_to(path: Path) -> Iterator[Path]:
    """A new file name in ``path``'s folder (``.<name>.<random>.tmp``), removed on leaving the block
    unless it was renamed: the export writes there, and only a checked graph replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def _write(adapter: _Adapter, flat: tuple[Tensor, ...], path: Path, export: OnnxExport, opset: int | None) -> None:
    """``torch.onnx.export`` (TorchScript-based) of the adapted module to ``path``, its errors as
    :class:`ExportError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of input checks; the exporter's deprecation notice
        try:
            torch.onnx.export(
                adapter,
                flat,
                str(path),
                dynamo=False,
                input_names=export.input_names,
                output_names=export.output_names,
                dynamic_axes=export.dynamic_axes,
                opset_version=opset,
            )
        except torch.onnx.OnnxExporterError as error:
            text = " ".join(str(error).split("[Caused by", 1)[0].split())
            reason = re.search(r"because (.+?)\.", text) or re.search(r"^(.{1,300})", text)
            source = re.search(r"# (\S+:\d+)", text)
            raise ExportError(
                f"torch's ONNX exporter cannot export {type(adapter.module).__name__}: "
                + (f"the operation at {source.group(1)} fails: " if source else "")
                + (reason.group(1) if reason else type(error).__name__)
            ) from None


def _check_graph(path: Path) -> None:
    """onnx's checker on the written graph, its complaint as :class:`ExportError`."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported graph is not valid ONNX: {str(error).splitlines()[0][:300]}") from None


def _probe_sizes(sizes: Mapping[str, int], dynamic_sequence: bool) -> list[dict[str, int]]:
    probes = [dict(sizes)]
    if BATCH in sizes:
        probes.append({**sizes, BATCH: sizes[BATCH] + 1})
        probes.append({**sizes, BATCH: 1})
    sequences = [label for label in sizes if _is_sequence(label)] if dynamic_sequence else []
    for label in sequences:
        probes.append({**sizes, label: sizes[label] + 3})
    if sequences:
        shortest = {**sizes, **dict.fromkeys(sequences, 1)}
        probes.append({**shortest, BATCH: sizes[BATCH] + 2} if BATCH in sizes else shortest)
    return probes


def onnxruntime_session(path: str | Path) -> Any:
    """An onnxruntime ``InferenceSession`` on one thread (raises ImportError with the install hint)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"running ONNX graphs needs onnxruntime: {INSTALL_HINT}") from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures reach the caller as exceptions; no extra lines on stderr
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify(
    module: nn.Module,
    slots: list[_Slot],
    sizes: Mapping[str, int],
    result: OnnxExport,
    path: Path,
    rtol: float,
    atol: float,
) -> None:
    """Run the graph at ``path`` in onnxruntime at the probe sizes and compare with ``module``; records
    the sizes and the largest difference in ``result``, raises :class:`ExportError` on a mismatch."""
    try:
        session = onnxruntime_session(path)
    except ImportError:
        raise
    except Exception as error:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load the exported graph: {str(error).splitlines()[0][:300]}") from None
    worst = 0.0
    was_training = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        for probe in _probe_sizes(sizes, result.dynamic_sequence):
            flat = _resized(slots, probe)
            expected = _run(module, slots, flat)
            where = ", ".join(f"{label} {size}" for label, size in probe.items()) or "the example"
            feed = {name: tensor.detach().cpu().numpy() for name, tensor in zip(result.input_names, flat, strict=True)}
            try:
                got = session.run(result.output_names, feed)
            except Exception as error:  # onnxruntime raises its own exception types
                raise ExportError(
                    f"the exported graph fails at {where} ({str(error).splitlines()[0][:300]}); a part of the model "
                    "depends on the example's sizes in Python. Export with dynamic_sequence=False or "
                    "give dynamic_axes"
                ) from None
            for name, (_, want), array in zip(result.output_names, expected, got, strict=True):
                actual = torch.from_numpy(array).to(want.dtype)
                if actual.shape != want.shape:
                    raise ExportError(
                        f"the exported graph's output {name!r} has shape {tuple(actual.shape)} at {where}; "
                        f"the module gives {tuple(want.shape)}"
                    )
                difference = float((actual - want.cpu()).abs().max()) if want.numel() else 0.0
                if not torch.allclose(actual, want.cpu(), rtol=rtol, atol=atol, equal_nan=True):
                    raise ExportError(
                        f"the exported graph disagrees with the module on output {name!r} at {where} (max abs "
                        f"difference {difference:.3g}): a part of the model was unrolled over the example's sizes or "
                        "depends on them in Python. Export with dynamic_sequence=False, or an example of the sizes "
                        "you will run"
                    )
                worst = max(worst, difference)
            steps = [size for label, size in probe.items() if _is_sequence(label)]
            result.verified.append((probe.get(BATCH, 0), max(steps) if steps else None))
    finally:
        for sub, training in was_training:
            sub.training = training
    result.max_difference = worst
