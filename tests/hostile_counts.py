"""Count what the reliability tests try, from the tests themselves: the parametrised cases of the
hostile-input sweep, the Hypothesis budgets (``max_examples``) of the fuzz tests, and the SIGKILLs of
the fault-injection test. The figures of docs/robustness.md come from this script::

    .venv/bin/python tests/hostile_counts.py
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "training"))

import test_fuzz_loaders as fuzz  # noqa: E402
import test_hostile_input as hostile  # noqa: E402
import test_reliability as reliability  # noqa: E402


def cases(test: Callable) -> int:
    """How many cases pytest makes of ``test``: the product of its ``parametrize`` sizes."""
    count = 1
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "parametrize":
            count *= len(mark.args[1])
    return count


def examples(test: Callable) -> int:
    """The Hypothesis budget of one case of ``test`` (``max_examples``)."""
    return test._hypothesis_internal_use_settings.max_examples


def main() -> None:
    print("hostile input to the commands (tests/test_hostile_input.py):")
    kinds, text = len(hostile.HOSTILE_FILES), len(hostile.GOOD_TEXT)
    refusals = sum(case not in hostile.GOOD_TEXT for case in hostile.FILE_CASES)
    print(
        f"  data files: {len(hostile.FILE_COMMANDS)} commands x {kinds} kinds of file "
        f"({', '.join(hostile.HOSTILE_FILES)}): {refusals} refusals; for charlm the long line and the brackets "
        f"are text ({text} cases: evaluated, or left out for train)"
    )
    print(
        f"  model folders: {len(hostile.MODEL_CASES)} cases ({len(hostile.MODEL_COMMANDS)} commands x "
        f"{len(hostile.HOSTILE_MODELS)} broken folders)"
    )
    print(f"  outputs that cannot be written: {len(hostile.OUTPUT_COMMANDS)} commands")
    print(
        f"  bad option values: {len(hostile.BAD_OPTIONS)}; bad settings and inline inputs: {len(hostile.BAD_SETTINGS)}"
    )
    total = sum(cases(test) for name, test in vars(hostile).items() if name.startswith("test_"))
    print(f"  test cases in the file: {total}")

    print("fuzzing and properties (tests/test_fuzz_loaders.py), examples per run (Hypothesis max_examples):")
    grand = 0
    for name, test in vars(fuzz).items():
        if name.startswith("test_") and hasattr(test, "_hypothesis_internal_use_settings"):
            count = cases(test) * examples(test)
            grand += count
            print(f"  {name}: {cases(test)} x {examples(test)} = {count}")
    print(
        f"  in all: {grand} generated inputs; loaders fuzzed: {'; '.join(fuzz.LOADERS)}; checkpoints; saved models "
        f"of {len(fuzz.CONFIGS)} tasks; Keras files"
    )

    print("fault injection (tests/training/test_reliability.py):")
    for mark in reliability.test_sigkill_at_random_moments_then_resume_bit_for_bit.pytestmark:
        if mark.name == "parametrize":
            for param in mark.args[1]:
                kills, steps, _, fork = param.values
                slow = any(m.name == "slow" for m in param.marks)
                print(
                    f"  {kills} SIGKILLs of a {steps}-step run ({'fork' if fork else 'exec'}; "
                    f"{'slow' if slow else 'fast'} suite)"
                )


if __name__ == "__main__":
    main()
