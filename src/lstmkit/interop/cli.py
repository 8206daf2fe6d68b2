"""``lstmkit export onnx CHECKPOINT OUT.onnx``: a trained model as an ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..commandline.messages import console, user_errors
from .onnx import OPSETS, ExportError, check_opset

app = typer.Typer(help="Export trained models to other formats.", no_args_is_help=True)


def _supported_opset(opset: int | None) -> int | None:
    """The ``--opset`` value, refused before anything is loaded when the export does not support it."""
    try:
        check_opset(opset)
    except ExportError as error:
        raise typer.BadParameter(str(error)) from None
    return opset


@app.command("onnx")
def onnx_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="A trained model folder (config.json + model.safetensors), or a Keras .keras file.")
    ],
    out: Annotated[Path, typer.Argument(help="The ONNX file to write.")],
    batch: Annotated[int, typer.Option(min=1, max=4096, help="Batch size of the example the export traces.")] = 2,
    steps: Annotated[int, typer.Option(min=1, max=100_000, help="Sequence length of the example.")] = 8,
    static_sequence: Annotated[
        bool,
        typer.Option(
            "--static-sequence",
            help="Unroll the time loop over --steps (any cell; the graph then takes only that length).",
        ),
    ] = False,
    with_state: Annotated[
        bool, typer.Option("--with-state", help="Make the initial recurrent state an input too (h_0, c_0).")
    ] = False,
    opset: Annotated[
        int | None,
        typer.Option(
            callback=_supported_opset, help=f"ONNX opset, {OPSETS[0]} to {OPSETS[-1]} (default: torch's, 20)."
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check the graph in onnxruntime against the model.")
    ] = True,
) -> None:
    """Write any task's trained model (or a Keras .keras model) as ONNX, with dynamic batch and sequence
    axes, checked in onnxruntime."""
    from .onnx import export_pretrained

    with user_errors():
        try:
            result = export_pretrained(
                checkpoint,
                out,
                batch=batch,
                steps=steps,
                with_state=with_state,
                dynamic_sequence=not static_sequence,
                opset_version=opset,
                verify=verify,
            )
        except ImportError as error:  # onnxruntime missing: a ValueError for user_errors' one line
            raise ValueError(str(error)) from None
        except ExportError as error:  # in the words of the command line
            raise ValueError(
                f"{checkpoint}: {str(error).replace('dynamic_sequence=False', '--static-sequence')}"
            ) from None

    def shape(name: str) -> str:
        axes = result.dynamic_axes.get(name, {})
        return "{" + ", ".join(f"{axis}: {label}" for axis, label in sorted(axes.items())) + "}"

    console.print(f"wrote [bold]{result.path}[/] ({result.path.stat().st_size:,} bytes)", highlight=False)
    console.print("inputs:  " + ", ".join(f"{name} {shape(name)}" for name in result.input_names), highlight=False)
    console.print("outputs: " + ", ".join(f"{name} {shape(name)}" for name in result.output_names), highlight=False)
    if result.verified:
        sizes = ", ".join(f"{b}x{t}" if t is not None else f"batch {b}" for b, t in result.verified)
        console.print(f"onnxruntime agrees with the model at {sizes} (max abs difference {result.max_difference:.2g})")
