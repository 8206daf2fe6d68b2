"""The benchmark suite: lstmkit's layers against torch.nn, a naive autograd loop and Keras 3.

Run it with ``lstmkit bench`` (``--quick`` for a one-minute check); it writes ``results.md`` and
``results.json``. :mod:`.timing` times round-robin, :mod:`.peers` builds the implementations,
:mod:`.memory` measures peak memory in fresh processes, :mod:`.suite` runs and reports.
"""
