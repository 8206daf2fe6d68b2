"""Checkpoints that never corrupt and never unpickle.

Two formats, both safetensors (tensors + a string metadata map, no pickle anywhere):

* a **training checkpoint** (``checkpoint.safetensors``): model weights, optimizer state, the torch
  random state and the trainer's position, so ``--resume`` continues bit for bit;
* a **pretrained directory** (Hugging Face style): ``config.json`` + ``model.safetensors``, what
  ``evaluate``/``predict``/``generate`` load.

Every file is written to a temporary file in the same folder, flushed, fsynced and renamed over the
target (:func:`atomic_write`), so a crash at any moment leaves either the old file or the new one.
Loading checks what it reads and names the problem (missing, extra or mis-shaped tensors, a file
that is not a checkpoint, a truncated file, a config of another task).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn

CHECKPOINT_FORMAT = "lstmkit-checkpoint/1"
PRETRAINED_FORMAT = "lstmkit-pretrained/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint or pretrained directory that cannot be loaded; the message says why."""


def current_umask() -> int:
    """The process's file mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half. The
    file gets the mode of any new file, ``0o666`` less the umask (``0o644`` under umask 022), not the
    ``0o600`` of the temporary file it is written to."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) that :func:`atomic_write` leaves behind when its
    process is killed mid-write; call it only where no other process writes into ``directory``."""
    stale = sorted(Path(directory).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file ({len(data)} bytes; expected a header)")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > len(data) - 8:
        raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {header_size} bytes announced)")
    try:
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as error:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({error})") from None
    return tensors, metadata


def _json_field(metadata: Mapping[str, str], key: str, path: Path) -> Any:
    if key not in metadata:
        raise CheckpointError(f"{path}: metadata has no {key!r}; not an lstmkit checkpoint")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON ({error})") from None


def check_state_dict(model: nn.Module, tensors: Mapping[str, Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing}")
    if extra:
        problems.append(f"unexpected tensors {extra}")
    for name in sorted(set(expected) & set(tensors)):
        want, got = expected[name], tensors[name]
        if want.shape != got.shape:
            problems.append(f"{name} has shape {tuple(got.shape)}, the model expects {tuple(want.shape)}")
        elif want.dtype != got.dtype and want.is_floating_point() != got.is_floating_point():
            problems.append(f"{name} has dtype {got.dtype}, the model expects {want.dtype}")
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(problems))


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: Mapping[str, Tensor], layout: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    for name, value in layout["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": layout["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    task: str,
    model_config: Mapping[str, Any],
    train_config: Mapping[str, Any],
    trainer_state: Mapping[str, Any],
) -> Path:
    """Write a complete training checkpoint atomically (see the module docstring)."""
    tensors = {f"model.{name}": tensor for name, tensor in _model_tensors(model).items()}
    optimizer_tensors, optimizer_layout = _optimizer_tensors(optimizer)
    tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "task": task,
        "model_config": json.dumps(dict(model_config)),
        "train_config": json.dumps(dict(train_config)),
        "trainer_state": json.dumps(dict(trainer_state)),
        "optimizer": json.dumps(optimizer_layout),
    }
    return atomic_write(path, save_safetensors_bytes(tensors, metadata=metadata))


def read_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read a training checkpoint: ``{"task", "model_config", "train_config", "trainer_state",
    "model": state_dict, "optimizer_tensors", "optimizer_layout", "rng"}``; checks its format."""
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: format {metadata.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    if task is not None and metadata.get("task") != task:
        raise CheckpointError(f"{path}: a checkpoint of task {metadata.get('task')!r}, expected {task!r}")
    if not isinstance(metadata.get("task"), str):
        raise CheckpointError(f"{path}: metadata 'task' must name the task, got {metadata.get('task')!r}")
    if "rng.torch" not in tensors:
        raise CheckpointError(f"{path}: no random state (tensor 'rng.torch'); not a complete checkpoint")
    fields = {
        key: _json_field(metadata, key, path) for key in ("model_config", "train_config", "trainer_state", "optimizer")
    }
    for key, value in fields.items():
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: metadata {key!r} must be a JSON object, got {json.dumps(value)[:80]}")
    return {
        "task": metadata["task"],
        "model_config": fields["model_config"],
        "train_config": fields["train_config"],
        "trainer_state": fields["trainer_state"],
        "optimizer_layout": fields["optimizer"],
        "model": {name[len("model.") :]: t for name, t in tensors.items() if name.startswith("model.")},
        "optimizer_tensors": {name: t for name, t in tensors.items() if name.startswith("optimizer.")},
        "rng": tensors["rng.torch"],
        "path": str(path),
    }


def restore_checkpoint(checkpoint: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint read by :func:`read_checkpoint` into ``model`` and ``optimizer`` and
    restore the torch random state."""
    check_state_dict(model, checkpoint["model"], checkpoint["path"])
    model.load_state_dict(checkpoint["model"])
    try:
        optimizer.load_state_dict(_optimizer_state(checkpoint["optimizer_tensors"], checkpoint["optimizer_layout"]))
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{checkpoint['path']}: optimizer state does not fit ({error})") from None
    torch.set_rng_state(checkpoint["rng"])


def save_pretrained(directory: str | Path, model: nn.Module, *, task: str, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each atomically)."""
    directory = Path(directory)
    document = {"format": PRETRAINED_FORMAT, "task": task, "config": dict(config)}
    atomic_write(directory / WEIGHTS_NAME, save_safetensors_bytes(_model_tensors(model), metadata={"task": task}))
    atomic_write(directory / CONFIG_NAME, (json.dumps(document, indent=2) + "\n").encode())
    return directory


def read_pretrained_config(directory: str | Path, task: str) -> dict[str, Any]:
    """The ``config`` of a pretrained directory written by :func:`save_pretrained` for ``task``."""
    directory = Path(directory)
    if directory.is_file():
        directory = directory.parent
    path = directory / CONFIG_NAME
    if not path.is_file():
        expected = "expected a folder written by training or save_pretrained"
        raise CheckpointError(f"{directory}: no {CONFIG_NAME}; {expected}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != PRETRAINED_FORMAT:
        raise CheckpointError(f"{path}: not an lstmkit config (expected format {PRETRAINED_FORMAT!r})")
    if document.get("task") != task:
        raise CheckpointError(f"{path}: a model of task {document.get('task')!r}, expected {task!r}")
    if not isinstance(document.get("config"), dict):
        raise CheckpointError(f"{path}: 'config' must be an object")
    return document["config"]


def load_pretrained(directory: str | Path, task: str, build: Callable[[dict[str, Any]], nn.Module]) -> nn.Module:
    """Build the model of ``task`` from its ``config.json`` with ``build`` and load its weights.

    The model is first built on the ``meta`` device (shapes, no memory) and checked against the
    weights file, so a config that asks for billions of weights is refused instead of allocated."""
    directory = Path(directory)
    if directory.is_file():
        directory = directory.parent
    config = read_pretrained_config(directory, task)
    try:
        with torch.device("meta"):
            skeleton = build(config)
    except CheckpointError:
        raise
    except (ValueError, TypeError, RuntimeError) as error:  # a field of the wrong name, type or size (too large
        raise CheckpointError(f"{directory / CONFIG_NAME}: {error}") from None  # to describe): name the file too
    tensors, _ = _read_safetensors(directory / WEIGHTS_NAME)
    check_state_dict(skeleton, tensors, str(directory / WEIGHTS_NAME))
    model = build(config)  # as large as the weights file, now that they fit
    model.load_state_dict(tensors)
    return model.eval()
