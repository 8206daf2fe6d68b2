"""Long-lag problems, and the experiment that shows why gated cells beat a plain RNN on them.

:func:`run_long_lag` trains every cell kind on every task and lag for the same fixed budget (the
same data, the same initial seed, the shared :class:`~lstmkit.training.Trainer`) and records the
learning curve on a held-out batch; :func:`long_lag_table` prints what each reached. By idea:

* :mod:`~lstmkit.inspect.longlag.problems`: the adding problem and the copy task (:class:`AddingProblem`,
  :class:`CopyMemory`, :func:`make_task`);
* :mod:`~lstmkit.inspect.longlag.settings`: what the experiment trains and how
  (:class:`LongLagSettings`, :func:`init_options`, :data:`QUICK`);
* :mod:`~lstmkit.inspect.longlag.training`: one run, its model, start and record
  (:class:`LongLagModel`, :func:`initial_model`, :func:`train_long_lag`, :class:`LongLagRun`);
* :mod:`~lstmkit.inspect.longlag.grid`: every run of the settings, in worker processes
  (:func:`run_long_lag`);
* :mod:`~lstmkit.inspect.longlag.tables`: the tables and the summary sentence made of the runs.

Everything is importable from ``lstmkit.inspect.longlag`` itself.
"""

from .grid import run_long_lag
from .problems import TASK_NAMES, AddingProblem, CopyMemory, LongLagTask, check_lag, make_task
from .settings import LONG_MEMORY_INIT, QUICK, LongLagSettings, init_options
from .tables import learnt, learnt_summary, long_lag_table, recipe_table
from .training import (
    LongLagModel,
    LongLagRun,
    held_out,
    initial_model,
    set_forget_bias,
    stream_seed,
    train_long_lag,
)

__all__ = [
    "LONG_MEMORY_INIT",
    "QUICK",
    "TASK_NAMES",
    "AddingProblem",
    "CopyMemory",
    "LongLagModel",
    "LongLagRun",
    "LongLagSettings",
    "LongLagTask",
    "check_lag",
    "held_out",
    "init_options",
    "initial_model",
    "learnt",
    "learnt_summary",
    "long_lag_table",
    "make_task",
    "recipe_table",
    "run_long_lag",
    "set_forget_bias",
    "stream_seed",
    "train_long_lag",
]
