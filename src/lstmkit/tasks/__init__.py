"""Tasks on real data: ``charlm``, ``pairs``, ``classify``, ``forecast``. Each is a package with
``data``, ``model`` (a :class:`~lstmkit.tasks.common.TaskModel`), ``task`` (presets, training,
evaluation) and ``cli`` (``lstmkit <task> ...``)."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..training.checkpoint import CheckpointError, read_pretrained_config
from .common import TaskModel

TASKS = ("charlm", "pairs", "classify", "forecast")


def model_class(task: str) -> type[TaskModel]:
    """The model class of ``task`` (the :class:`TaskModel` in ``lstmkit.tasks.<task>.model``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
    module = importlib.import_module(f"{__name__}.{task}.model")
    for candidate in vars(module).values():
        is_model = isinstance(candidate, type) and issubclass(candidate, TaskModel)
        if is_model and getattr(candidate, "task", None) == task:
            return candidate
    raise LookupError(f"{module.__name__} defines no TaskModel for task {task!r}")


def task_of(directory: str | Path) -> str:
    """The task a saved model folder belongs to (from its ``config.json``)."""
    for task in TASKS:
        try:
            read_pretrained_config(directory, task)
        except CheckpointError as error:
            if "a model of task" in str(error):
                continue
            raise
        return task
    raise CheckpointError(f"{directory}: config.json names a task outside {TASKS}")


def load_model(directory: str | Path) -> TaskModel:
    """Any task's model from a folder written by training or ``save_pretrained``, in eval mode."""
    return model_class(task_of(directory)).from_pretrained(directory)


__all__ = ["TASKS", "TaskModel", "load_model", "model_class", "task_of"]
