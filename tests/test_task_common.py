"""What the four tasks share: the command line's refusal of bad arguments, in one clear line."""

from __future__ import annotations

import pytest
from task_helpers import assert_clear_error

from lstmkit.tasks import TASKS


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "--set", "hiden_size=3"], "unknown setting 'hiden_size'"),
        (["train", "--cell", "transformer"], "unknown cell 'transformer'"),
        (["evaluate", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_every_task_refuses_bad_arguments_in_one_clear_line(task: str, arguments: list[str], message: str) -> None:
    assert_clear_error([task, *arguments], message)
