"""The benchmark suite, as ``lstmkit bench`` (see ``lstmkit bench --help``); results go next to this
file (``results.md``, ``results.json``) unless ``--out-dir`` says otherwise.

    python benchmarks/run.py            # all five shapes, ~7.5 min on a quiet 2-core machine (458 s in results.md)
    python benchmarks/run.py --quick    # one small shape, about a minute
"""

import sys
from pathlib import Path

from lstmkit.cli import app

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not any(argument == "--out-dir" or argument.startswith("--out-dir=") for argument in arguments):
        arguments += ["--out-dir", str(Path(__file__).resolve().parent)]
    app(["bench", *arguments], prog_name="lstmkit")
