"""Export saved models: any task's model folder or a Keras 3 ``.keras`` file."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...keras.base import KerasRNN
from ...layers import Recurrent
from .common import STATE_PARAMETERS, ExportError, check_opset
from .export import OnnxExport, export_onnx
from .inputs import _lengths_owner, _parameter_names


def example_inputs(model: nn.Module, batch: int = 2, steps: int = 8) -> dict[str, Tensor]:
    """Example inputs for a model's ``forward``, by parameter name, from what the model holds.

    A model may say itself through a method ``example_inputs(batch, steps) -> dict``. Otherwise:
    every required parameter gets token ids ``(batch, steps)`` in the vocabulary of the model's first
    ``nn.Embedding``, or, without one, features ``(batch, steps, input_size)`` of its first recurrent
    layer (a second sequence ``steps + 1`` long, and so on, so that each keeps a sequence axis of its
    own); a parameter whose name contains ``length`` gets lengths ``(batch,)`` (the first sequence
    full, the others shorter; ``a_lengths`` goes with ``a``). Optional parameters (``state=None``,
    ...) are left out.

    >>> from lstmkit.tasks.charlm.model import CharLM, CharLMConfig
    >>> inputs = example_inputs(CharLM(CharLMConfig("abc", hidden_size=8, embedding_size=4)), batch=3, steps=5)
    >>> {name: (tuple(t.shape), t.dtype) for name, t in inputs.items()}
    {'ids': ((3, 5), torch.int64)}
    """
    own = getattr(model, "example_inputs", None)
    if callable(own):
        return dict(own(batch, steps))
    generator = torch.Generator().manual_seed(0)
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    recurrent = next((m for m in model.modules() if isinstance(m, Recurrent | KerasRNN)), None)
    parameters = inspect.signature(model.forward).parameters.values()
    inputs: dict[str, Tensor] = {}
    for parameter in parameters:
        if parameter.kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            continue
        # several sequences get lengths of their own (steps, steps + 1, ...): their axes stay independent
        length = steps + sum(1 for tensor in inputs.values() if tensor.dim() >= 2)
        if "length" in parameter.name:
            owner = inputs.get(_lengths_owner(parameter.name))
            full = owner.shape[1] if owner is not None and owner.dim() >= 2 else steps
            lengths = torch.randint(1, full + 1, (batch,), generator=generator)
            lengths[0] = full
            inputs[parameter.name] = lengths
        elif parameter.default is not inspect.Parameter.empty:
            continue
        elif embedding is not None:
            low = 1 if embedding.num_embeddings > 1 else 0
            inputs[parameter.name] = torch.randint(low, embedding.num_embeddings, (batch, length), generator=generator)
        elif recurrent is not None and recurrent.input_size is not None:
            dtype = next(recurrent.parameters()).dtype
            inputs[parameter.name] = torch.randn(batch, length, recurrent.input_size, generator=generator, dtype=dtype)
        else:
            raise ExportError(
                f"cannot make an example for {type(model).__name__}.forward's {parameter.name!r}: the model has no "
                "embedding or recurrent layer to size it from; give it a method example_inputs(batch, steps)"
            )
    return inputs


def export_pretrained(
    directory: str | Path,
    path: str | Path,
    *,
    batch: int = 2,
    steps: int = 8,
    with_state: bool = False,
    **options: Any,
) -> OnnxExport:
    """Export a saved model: a task model's folder (any task; see :func:`lstmkit.tasks.load_model`)
    or a Keras 3 ``.keras`` file (see :func:`lstmkit.keras.load_keras_file`), with
    inputs from :func:`example_inputs`; ``options`` go to :func:`export_onnx`. A model with a method
    ``onnx_module()`` is exported as the module it returns: the forecaster's takes and returns values
    in the data's units (its scaling inside the graph), as ``forecast predict`` reads and prints them.

    ``with_state=True`` also makes the initial recurrent state an input (``h_0``, ``c_0``), for a
    model whose ``forward(..., state=None)`` returns ``(output, state)`` such as charlm: a runtime
    can then feed the state back to generate step by step."""
    check_opset(options.get("opset_version"))
    if Path(directory).suffix == ".keras":
        from ...keras import load_keras_file

        model: nn.Module = load_keras_file(directory)
    else:
        from ...tasks import load_model

        model = load_model(directory)
    own = getattr(model, "onnx_module", None)
    if callable(own):
        model = own()
    inputs = example_inputs(model, batch, steps)
    names, var_positional = _parameter_names(model)
    if with_state:
        slot = next((name for name in names if name in STATE_PARAMETERS), None)
        if slot is None:
            raise ExportError(f"{type(model).__name__}.forward takes no state argument (one of {STATE_PARAMETERS})")
        with torch.no_grad():
            returned = model(**inputs)
        state = returned[1] if isinstance(returned, tuple) and len(returned) == 2 else None
        if not isinstance(state, Tensor | tuple):
            raise ExportError(f"{type(model).__name__} does not return (output, state); cannot export its state")
        inputs[slot] = state
    if var_positional and not names:  # forward(*inputs), as a Keras model's: its inputs by their own names
        options.setdefault("input_names", list(inputs))
        return export_onnx(model, tuple(inputs.values()), path, **options)
    positional = []
    for name in names:  # positional up to the last given one; a skipped optional one stays None
        if name in inputs:
            positional.append(inputs.pop(name))
        elif inputs:
            positional.append(None)
    return export_onnx(model, tuple(positional), path, example_kwargs=inputs or None, **options)
