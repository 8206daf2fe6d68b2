"""``lstmkit bench``: the benchmark suite from the command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


def _option(name: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """``parse(value)``, its ``ValueError`` reported as a bad value of the option ``name``."""
    try:
        return parse(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=f"'{name}'") from None


def bench_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="One small shape, 3 repetitions: about a minute on a quiet machine.")
    ] = False,
    shapes: Annotated[
        str | None,
        typer.Option(help="Shapes T x B x I x H, comma-separated, e.g. 50x32x64x128,200x1x64x128 (default: all five)."),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Round-robin repetitions (default 7; 3 quick).")
    ] = None,
    warmup: Annotated[int | None, typer.Option(min=0, max=1000, help="Warm-up calls per implementation.")] = None,
    target_ms: Annotated[
        float | None, typer.Option(min=0.0, help="Length of one timing; calls per timing are calibrated to it.")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, max=1024, help="torch threads (here and in memory children).")] = 2,
    out_dir: Annotated[Path, typer.Option(help="Where results.md and results.json go.")] = Path("benchmarks"),
    memory: Annotated[
        bool, typer.Option("--memory/--no-memory", help="Measure peak training memory (one process per row).")
    ] = True,
    memory_jobs: Annotated[
        int, typer.Option(min=1, max=64, help="Memory children run side by side (their speed does not matter).")
    ] = 2,
    keras: Annotated[bool, typer.Option("--keras/--no-keras", help="Include Keras 3 (torch backend) rows.")] = True,
    only: Annotated[
        str | None,
        typer.Option(help="Comma-separated implementation keys (e.g. lstmkit_lstm,user_lstm); baselines are added."),
    ] = None,
    steady_state: Annotated[
        bool | None,
        typer.Option(
            "--steady-state/--short-warmup",
            help="Warm lstmkit rows up past the step count after which lstmkit compiles steps "
            "(LSTMKIT_COMPILE=auto). Default: on, off with --quick.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Time lstmkit against torch.nn, a naive loop and Keras; write results.md and results.json."""
    from . import peers, report, suite

    try:
        settings: dict = {"threads": threads, "memory": memory, "memory_jobs": memory_jobs, "keras": keras}
        if steady_state is not None:
            settings["steady_state"] = steady_state
        if shapes is not None:
            settings["shapes"] = _option("--shapes", suite.parse_shapes, shapes)
        if only is not None:
            settings["only"] = [key.strip() for key in only.split(",") if key.strip()]
            _option("--only", peers.select, settings["only"])  # unknown keys fail here, before anything runs
        for name, value in (("repeats", repeats), ("warmup", warmup), ("target_ms", target_ms)):
            if value is not None:
                settings[name] = value
        config = suite.Config.quick_config(**settings) if quick else suite.Config(**settings)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    existing = next(folder for folder in (out_dir, *out_dir.parents) if folder.exists())
    if not existing.is_dir():  # found now, not after minutes of timing
        raise typer.BadParameter(f"{existing} is a file; expected a folder for results.md and results.json",
                                 param_hint="'--out-dir'")  # fmt: skip
    result = suite.run(config, progress=lambda line: typer.echo(line))
    result["targets"] = report.targets(result)
    markdown = report.write_markdown(result, out_dir / "results.md")
    raw = report.write_json(result, out_dir / "results.json")
    misses = sum(cell["status"] == "miss" for row in result["targets"] for cell in row["cells"])
    passes = sum(cell["status"] == "pass" for row in result["targets"] for cell in row["cells"])
    typer.echo(f"targets: {passes} pass, {misses} miss (figures, not assertions)")
    typer.echo(f"wrote {markdown} and {raw} in {result['duration_s']:.0f} s")
