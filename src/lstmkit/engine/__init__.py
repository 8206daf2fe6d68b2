"""The time loop: every layer drives its cells through :func:`run_sequence`.

For now the loop is the reference autograd loop of :mod:`lstmkit.engine.reference`; fused
backends plug in here and the reference stays as their oracle.
"""

from .reference import SequenceResult, run_sequence

__all__ = ["SequenceResult", "run_sequence"]
