"""ONNX export: the exported graphs run in onnxruntime (an independent implementation of ONNX's
LSTM/GRU/RNN operators) on other batch sizes and sequence lengths than the example, and agree with
lstmkit to 1e-5; what cannot export fails with an error naming the part and the way out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import lstmkit
from lstmkit.cli import app
from lstmkit.interop.onnx import (
    OPSETS,
    ExportError,
    export_onnx,
    export_pretrained,
    onnxruntime_session,
    traceable_engine,
)
from lstmkit.keras import GRU as KerasGRU
from lstmkit.keras import LSTM as KerasLSTM
from lstmkit.keras import Bidirectional, SimpleRNN
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig
from lstmkit.tasks.classify.model import ClassifyConfig, SequenceClassifier

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# lstmkit itself runs an LSTM with a projection on torch's kernels, which say oneDNN lacks it
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")
runner = CliRunner()
SIZES = [(1, 1), (2, 7), (5, 3), (3, 12)]  # (batch, sequence): none of them the example's (4, 5)


def flat(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in flat(item)]


def run_onnx(path: Path, feed: dict[str, torch.Tensor]) -> list[np.ndarray]:
    session = onnxruntime_session(path)
    return session.run(None, {name: tensor.numpy() for name, tensor in feed.items()})


def assert_close(got: list[np.ndarray], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for array, tensor in zip(got, want, strict=True):
        assert array.shape == tuple(tensor.shape)
        np.testing.assert_allclose(array, tensor.detach().numpy(), rtol=0, atol=1e-5)


LAYERS = {
    "lstm": lambda: lstmkit.LSTM(4, 6),
    "lstm-2-bi-batch-first": lambda: lstmkit.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
    "gru-2-bi": lambda: lstmkit.GRU(4, 6, num_layers=2, bidirectional=True),
    "gru-batch-first-no-bias": lambda: lstmkit.GRU(4, 6, bias=False, batch_first=True),
    "rnn-tanh-bi": lambda: lstmkit.RNN(4, 6, bidirectional=True, batch_first=True),
    "rnn-relu-3": lambda: lstmkit.RNN(4, 6, num_layers=3, nonlinearity="relu"),
    "recurrent-lstm-cell": lambda: lstmkit.Recurrent(lstmkit.LSTMCell, 4, 6, num_layers=2, batch_first=True),
}


def layout(layer: lstmkit.Recurrent, batch: int, steps: int) -> torch.Tensor:
    x = torch.randn(batch, steps, 4)
    return x if layer.batch_first else x.transpose(0, 1).contiguous()


@pytest.mark.parametrize("kind", LAYERS)
def test_layers_export_with_dynamic_batch_and_sequence(kind: str, tmp_path: Path) -> None:
    layer = LAYERS[kind]().eval()
    path = tmp_path / "layer.onnx"
    exported = export_onnx(layer, layout(layer, 4, 5), path)
    states = layer.cell().state_names
    assert exported.output_names == ["output", *(f"{s}_n" for s in states)]
    assert exported.dynamic_sequence and exported.max_difference < 1e-5
    for batch, steps in SIZES:
        x = layout(layer, batch, steps)
        assert_close(run_onnx(path, {"input": x}), flat(layer(x)))


@pytest.mark.parametrize("make", [lstmkit.LSTM, lstmkit.GRU], ids=["lstm", "gru"])
def test_lengths_and_initial_states_export(make, tmp_path: Path) -> None:
    layer = make(4, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
    names = [f"{state}_0" for state in layer.cell().state_names]
    initial = tuple(torch.randn(4, 4, 6) for _ in names)
    path = tmp_path / "layer.onnx"
    lengths = torch.tensor([5, 2, 4, 1])
    exported = export_onnx(layer, (torch.randn(4, 5, 4), initial), path, example_kwargs={"lengths": lengths})
    assert exported.input_names == ["input", *names, "lengths"]
    assert exported.dynamic_axes["h_0"] == {1: "batch"} and exported.dynamic_axes["lengths"] == {0: "batch"}
    cases = [([3, 7, 1], 7), ([2, 2], 6), ([9, 0, 4, 9, 1], 9), ([0, 1], 3), ([1], 1)]  # zero lengths, all short
    for lengths, steps in cases:
        batch = len(lengths)
        x, lengths = torch.randn(batch, steps, 4), torch.tensor(lengths)
        states = [torch.randn(4, batch, 6) for _ in names]
        want = flat(layer(x, states if len(states) > 1 else states[0], lengths=lengths))
        feed = {"input": x, "lengths": lengths} | dict(zip(names, states, strict=True))
        assert_close(run_onnx(path, feed), want)
        assert (want[0][lengths == 0] == 0).all()  # zero outputs and the initial state at length 0
        assert torch.equal(want[1][:, lengths == 0], states[0][:, lengths == 0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: Bidirectional(KerasLSTM(6, return_sequences=True, input_size=4), merge_mode="sum"),
        lambda: Bidirectional(KerasGRU(6, return_state=True, input_size=4)),
        lambda: KerasGRU(6, return_sequences=True, return_state=True, go_backwards=True, input_size=4),
        lambda: SimpleRNN(6, activation="relu", return_sequences=True, use_bias=False, input_size=4),
        lambda: KerasLSTM(6, return_state=True, input_size=4),
    ],
    ids=["bi-lstm-sum", "bi-gru-states", "gru-backwards", "simplernn-relu", "lstm-state"],
)
def test_keras_semantics_layers_export_with_dynamic_sequence(make, tmp_path: Path) -> None:
    layer = make().eval()
    for weight in layer.parameters():  # Keras' zero biases would hide a bias mistake
        nn.init.uniform_(weight, -0.5, 0.5)
    path = tmp_path / "keras.onnx"
    export_onnx(layer, torch.randn(4, 5, 4), path)
    for batch, steps in SIZES:
        x = torch.randn(batch, steps, 4)
        assert_close(run_onnx(path, {"inputs": x}), flat(layer(x)))


OPERATOR_LAYERS = {  # cells torch has no kernel for, but ONNX's LSTM (peepholes P) and GRU (linear_before_reset=0) do
    "peephole-2-bi": lambda: lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 4, 6, num_layers=2, bidirectional=True),
    "peephole-batch-first-sum": lambda: lstmkit.Recurrent(
        lstmkit.PeepholeLSTMCell, 4, 6, bidirectional=True, merge_mode="sum", batch_first=True
    ),
    "gru-reset-before-2-bi": lambda: lstmkit.GRU(4, 6, num_layers=2, bidirectional=True, reset_after=False),
    "gru-reset-before-no-bias": lambda: lstmkit.GRU(4, 6, bias=False, batch_first=True, reset_after=False),
}


@pytest.mark.parametrize("kind", OPERATOR_LAYERS)
def test_peephole_and_reset_before_cells_export_as_onnx_operators_of_any_length(kind: str, tmp_path: Path) -> None:
    layer = OPERATOR_LAYERS[kind]().eval()
    for weight in layer.parameters():  # peepholes start at zero; a wrong gate order must show
        nn.init.uniform_(weight, -0.5, 0.5)
    names = [f"{state}_0" for state in layer.cell().state_names]
    path = tmp_path / "layer.onnx"
    initial = tuple(torch.randn(layer.num_layers * layer.num_directions, 4, 6) for _ in names)
    lengths = torch.tensor([5, 2, 4, 1])
    exported = export_onnx(layer, (layout(layer, 4, 5), initial), path, example_kwargs={"lengths": lengths})
    assert exported.dynamic_sequence and exported.input_names == ["input", *names, "lengths"]
    operators = [node for node in onnx.load(path).graph.node if node.op_type in ("LSTM", "GRU")]
    assert len(operators) == layer.num_layers
    if "peephole" in kind:
        assert all(len(node.input) == 8 and node.input[7] for node in operators)  # P given
    else:
        assert all(onnx.helper.get_node_attr_value(node, "linear_before_reset") == 0 for node in operators)
    for lengths in ([3, 7, 1], [2, 0, 9, 4, 9]):  # other batch sizes and lengths than the example's
        lengths = torch.tensor(lengths)
        x = layout(layer, len(lengths), int(lengths.max()))
        states = [torch.randn(layer.num_layers * layer.num_directions, len(lengths), 6) for _ in names]
        want = flat(layer(x, states if len(states) > 1 else states[0], lengths=lengths))
        feed = {"input": x, "lengths": lengths} | dict(zip(names, states, strict=True))
        assert_close(run_onnx(path, feed), want)
    exported = export_onnx(layer, layout(layer, 2, 3), path)  # no lengths, no states
    for batch, steps in SIZES:
        x = layout(layer, batch, steps)
        assert_close(run_onnx(path, {"input": x}), flat(layer(x)))


def test_a_keras_gru_resetting_before_exports_as_onnx_gru(tmp_path: Path) -> None:
    layer = KerasGRU(6, reset_after=False, return_sequences=True, return_state=True, go_backwards=True, input_size=4)
    for weight in layer.parameters():
        nn.init.uniform_(weight, -0.5, 0.5)
    path = tmp_path / "keras.onnx"
    export_onnx(layer.eval(), torch.randn(4, 5, 4), path)
    assert [node.op_type for node in onnx.load(path).graph.node if node.op_type in ("GRU", "Loop", "Scan")] == ["GRU"]
    for batch, steps in SIZES:
        x = torch.randn(batch, steps, 4)
        assert_close(run_onnx(path, {"inputs": x}), flat(layer(x)))


class CoupledGateCell(lstmkit.Cell):
    """A user's cell (an LSTM whose input gate is one minus its forget gate), as docs/cells_and_layers.md shows."""

    gate_names = ("f", "g", "o")
    state_names = ("h", "c")

    def pointwise(self, xg: torch.Tensor, hg: torch.Tensor, state: tuple[torch.Tensor, ...]):
        _, c_prev = state
        f, g, o = (xg + hg).chunk(3, dim=-1)
        f, g, o = torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c_prev + (1 - f) * g
        return (o * torch.tanh(c), c), (f, g, o)


LOOPED = {  # cells no ONNX operator computes, and options the operators lack: one Scan per layer and direction
    "layernorm-2-bi": lambda: lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 4, 6, num_layers=2, bidirectional=True),
    "user-cell-bi-batch-first": lambda: lstmkit.Recurrent(CoupledGateCell, 4, 6, bidirectional=True, batch_first=True),
    "projection": lambda: lstmkit.LSTM(4, 6, proj_size=3, batch_first=True),
    "zoneout": lambda: lstmkit.LSTM(4, 6, batch_first=True, zoneout=0.2),
    "merge-sum": lambda: lstmkit.LSTM(4, 6, batch_first=True, bidirectional=True, merge_mode="sum"),
}


@pytest.mark.parametrize("kind", LOOPED)
def test_any_cell_exports_with_a_dynamic_sequence_as_scan_loops(kind: str, tmp_path: Path) -> None:
    layer = LOOPED[kind]().eval()
    for weight in layer.parameters():  # layer-norm gains and biases start at 1 and 0
        nn.init.uniform_(weight, -0.5, 0.5)
    path = tmp_path / "layer.onnx"
    lengths = torch.tensor([5, 2, 4, 1])
    exported = export_onnx(layer, layout(layer, 4, 5), path, example_kwargs={"lengths": lengths})
    assert exported.dynamic_sequence and exported.dynamic_axes["input"] == (
        {0: "batch", 1: "sequence"} if layer.batch_first else {0: "sequence", 1: "batch"}
    )
    graph = onnx.load(path).graph
    assert sum(node.op_type == "Scan" for node in graph.node) == layer.num_layers * layer.num_directions
    assert not {node.domain for node in graph.node} - {"", "ai.onnx"}  # no placeholder left
    for lengths in ([3, 7, 1], [2, 0, 9, 4, 9], [1]):  # other batch sizes and lengths than the example's
        lengths = torch.tensor(lengths)
        x = layout(layer, len(lengths), int(lengths.max()))
        assert_close(run_onnx(path, {"input": x, "lengths": lengths}), flat(layer(x, lengths=lengths)))


def test_a_keras_layer_of_other_activations_exports_as_a_scan_loop(tmp_path: Path) -> None:
    layer = KerasLSTM(6, recurrent_activation="hard_sigmoid", return_sequences=True, go_backwards=True, input_size=4)
    for weight in layer.parameters():
        nn.init.uniform_(weight, -0.5, 0.5)
    path = tmp_path / "keras.onnx"
    export_onnx(layer.eval(), torch.randn(4, 5, 4), path)
    assert [node.op_type for node in onnx.load(path).graph.node if node.op_type in ("LSTM", "Scan")] == ["Scan"]
    for batch, steps in SIZES:
        x = torch.randn(batch, steps, 4)
        assert_close(run_onnx(path, {"inputs": x}), flat(layer(x)))


def test_a_static_sequence_unrolls_the_loop_over_the_example_length(tmp_path: Path) -> None:
    layer = lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 4, 6, batch_first=True).eval()
    path = tmp_path / "unrolled.onnx"
    exported = export_onnx(layer, torch.randn(4, 5, 4), path, dynamic_sequence=False)
    assert exported.engine == "reference" and exported.dynamic_axes["input"] == {0: "batch"}
    assert not {"Scan", "Loop", "LSTM"} & {node.op_type for node in onnx.load(path).graph.node}
    for batch in (1, 3, 6):
        x = torch.randn(batch, 5, 4)
        assert_close(run_onnx(path, {"input": x}), flat(layer(x)))
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime refuses another length
        run_onnx(path, {"input": torch.randn(2, 6, 4)})


class PythonLoop(nn.Module):
    """Sums a linear map over the steps in a Python loop: tracing unrolls it for the example's length."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.linear(x[:, 0])
        for t in range(1, x.shape[1]):
            total = total + self.linear(x[:, t])
        return total


def test_verification_catches_a_graph_that_only_works_at_the_example_length(tmp_path: Path) -> None:
    (tmp_path / "loop.onnx").write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match="sequence 8.*dynamic_sequence=False"):
        export_onnx(PythonLoop(), torch.randn(2, 5, 4), tmp_path / "loop.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["loop.onnx"]  # no temporary file left
    assert (tmp_path / "loop.onnx").read_bytes() == b"an earlier export"  # and the earlier file kept
    exported = export_onnx(PythonLoop(), torch.randn(2, 5, 4), tmp_path / "loop.onnx", dynamic_sequence=False)
    assert exported.verified == [(2, None), (3, None), (1, None)]


@pytest.mark.parametrize("opset", [OPSETS[0], OPSETS[-1]])
def test_the_supported_opsets_range_ends_export_valid_graphs(opset: int, tmp_path: Path) -> None:
    """11 is the first opset in which a bidirectional LSTM with lengths exports (Sort), 20 torch's last."""
    layer = lstmkit.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
    path = tmp_path / "layer.onnx"
    lengths = torch.tensor([5, 3])
    export_onnx(layer, torch.randn(2, 5, 4), path, example_kwargs={"lengths": lengths}, opset_version=opset)
    graph = onnx.load(path)
    onnx.checker.check_model(graph, full_check=True)
    assert [entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")] == [opset]
    x, lengths = torch.randn(3, 9, 4), torch.tensor([9, 2, 6])
    assert_close(run_onnx(path, {"input": x, "lengths": lengths}), flat(layer(x, lengths=lengths)))


@pytest.mark.parametrize("opset", [7, 8, OPSETS[0] - 1, OPSETS[-1] + 1, 24, 99])
def test_unsupported_opsets_are_refused_before_anything_is_written(opset: int, tmp_path: Path) -> None:
    folder = charlm_folder(tmp_path)
    out = tmp_path / "exports" / "charlm.onnx"
    result = runner.invoke(app, ["export", "onnx", str(folder), str(out), "--opset", str(opset), "--no-verify"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"ONNX opset {opset} is not supported: use 11 to 20" in " ".join(result.output.split())
    with pytest.raises(ExportError, match=f"opset {opset} is not supported: use 11 to 20"):
        export_onnx(lstmkit.LSTM(4, 6), torch.randn(5, 2, 4), out, opset_version=opset, verify=False)
    assert not out.parent.exists()


def test_what_never_exports_fails_clearly(tmp_path: Path) -> None:
    layer = lstmkit.LSTM(4, 6, batch_first=True)
    x = torch.randn(2, 5, 4)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [5, 3], batch_first=True)
    with pytest.raises(ExportError, match="PackedSequence does not export"):
        export_onnx(layer, packed, tmp_path / "a.onnx")
    with pytest.raises(ExportError, match=r"lengths below 1 \(\[5, 0\]\)"):
        export_onnx(layer, x, tmp_path / "a.onnx", example_kwargs={"lengths": torch.tensor([5, 0])})
    with pytest.raises(ExportError, match="returns a dict.*gate traces"):
        export_onnx(Traced(layer), x, tmp_path / "a.onnx", dynamic_sequence=False)
    keras = KerasLSTM(6, return_sequences=True, input_size=4)
    with pytest.raises(ExportError, match="called with a mask.*dynamic_sequence=False"):
        export_onnx(keras, x, tmp_path / "a.onnx", example_kwargs={"mask": torch.ones(2, 5, dtype=torch.bool)})
    for dynamic_sequence in (True, False):
        with pytest.raises(ExportError, match="stateful layers carry states.*stateful=False"):
            export_onnx(
                KerasLSTM(6, stateful=True, input_size=4), x, tmp_path / "a.onnx", dynamic_sequence=dynamic_sequence
            )
    with pytest.raises(ExportError, match=r"takes 2 positional arguments \['input', 'hx'\], got 3"):
        export_onnx(layer, (x, None, x), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="disagree on the batch size"):
        export_onnx(layer, x, tmp_path / "a.onnx", example_kwargs={"lengths": torch.tensor([5, 3, 1])})


class Traced(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor):
        return self.layer(x, return_gates=True)


def test_traceable_engine_restores_everything() -> None:
    model = nn.Sequential(lstmkit.LSTM(3, 4, engine="native"), nn.Dropout(0.5))
    keras = KerasGRU(4, input_size=3)
    model.append(keras)
    model.train()
    with traceable_engine(model, "torch"):
        assert model[0].engine == "torch" and not model.training and not model[1].training
        assert "forward" in vars(keras)
    assert model[0].engine == "native" and model.training and model[1].training and "forward" not in vars(keras)
    with pytest.raises(ValueError, match="'torch' or 'reference'"), traceable_engine(model, "native"):
        pass


def charlm_folder(tmp_path: Path, cell: str = "lstm", num_layers: int = 2) -> Path:
    torch.manual_seed(1)
    model = CharLM(CharLMConfig("abcdefgh \n", cell=cell, hidden_size=16, embedding_size=5, num_layers=num_layers))
    folder = tmp_path / f"charlm-{cell}"
    model.save_pretrained(folder)
    return folder


def test_charlm_exports_from_the_command_line_and_matches(tmp_path: Path) -> None:
    folder = charlm_folder(tmp_path)
    out = tmp_path / "charlm.onnx"
    result = runner.invoke(app, ["export", "onnx", str(folder), str(out)])
    assert result.exit_code == 0, result.output
    assert "inputs:  ids {0: batch, 1: sequence}" in result.output
    assert "outputs: output {0: batch, 1: sequence}, h_n {1: batch}, c_n {1: batch}" in result.output
    assert "onnxruntime agrees with the model" in result.output
    model = CharLM.from_pretrained(folder)
    for batch, steps in SIZES:
        ids = torch.randint(0, 11, (batch, steps))
        assert_close(run_onnx(out, {"ids": ids}), flat(model(ids)))


def test_charlm_with_state_generates_step_by_step_like_lstmkit(tmp_path: Path) -> None:
    folder = charlm_folder(tmp_path, cell="gru", num_layers=1)
    out = tmp_path / "charlm.onnx"
    exported = export_pretrained(folder, out, with_state=True)
    assert exported.input_names == ["ids", "h_0"] and exported.output_names == ["output", "h_n"]
    model = CharLM.from_pretrained(folder)
    ids = torch.randint(1, 11, (3, 6))
    logits, state = model(ids)
    onnx_logits, onnx_state = run_onnx(out, {"ids": ids, "h_0": torch.zeros(1, 3, 16)})
    assert_close([onnx_logits, onnx_state], [logits, state])
    for _ in range(4):  # feed each step's state back, as generation does
        next_ids = logits[:, -1:].argmax(-1)
        logits, state = model(next_ids, state)
        onnx_logits, onnx_state = run_onnx(out, {"ids": next_ids, "h_0": torch.from_numpy(onnx_state)})
        assert_close([onnx_logits, onnx_state], [logits, state])


def test_classifier_exports_with_lengths(tmp_path: Path) -> None:
    config = ClassifyConfig(["a", "b", "c"], ["x", "y"], [0.5, -1.0], [2.0, 0.5], hidden_size=8, bidirectional=True,
                            pooling="mean")  # fmt: skip
    folder = tmp_path / "classify"
    SequenceClassifier(config).save_pretrained(folder)
    out = tmp_path / "classify.onnx"
    exported = export_pretrained(folder, out)
    assert exported.input_names == ["x", "lengths"]
    model = SequenceClassifier.from_pretrained(folder)
    for lengths in ([4, 1, 3], [2], [6, 6, 5, 1, 2]):
        x, lengths = torch.randn(len(lengths), max(lengths), 2), torch.tensor(lengths)
        assert_close(run_onnx(out, {"x": x, "lengths": lengths}), [model(x, lengths)])


def test_a_trained_forecaster_exports_in_the_data_units_and_forecasts_as_predict_does(tmp_path: Path) -> None:
    """The graph takes raw values and returns forecasts in the data's units (its scaling inside), so
    onnxruntime on the last window of the series gives what ``forecast predict`` prints."""
    from task_helpers import tiny

    from lstmkit.tasks.forecast.data import co2_series
    from lstmkit.tasks.forecast.model import Forecaster, forecast
    from lstmkit.tasks.forecast.task import configure, predict_next, train

    folder, out = tmp_path / "forecast", tmp_path / "forecast.onnx"
    train(*tiny(configure, "window=26", "horizon=4", "hidden_size=8", max_steps=3), folder)
    result = runner.invoke(app, ["export", "onnx", str(folder), str(out)])
    assert result.exit_code == 0, result.output
    assert "inputs:  values {0: batch, 1: sequence}" in result.output
    assert "outputs: forecast {0: batch}" in result.output
    model, series = Forecaster.from_pretrained(folder), co2_series()
    _, predicted = predict_next(model, series)  # what `forecast predict` prints
    assert predicted.min() > 300  # ppm, not standard units
    (got,) = run_onnx(out, {"values": torch.from_numpy(series.values[-26:][None])})
    np.testing.assert_allclose(got[0], predicted, rtol=1e-6)
    origins = [60, 700, 1500]  # a batch of windows, and longer ones than the model was trained on
    windows = np.stack([series.values[origin - 39 : origin + 1] for origin in origins])
    (got,) = run_onnx(out, {"values": torch.from_numpy(windows)})
    np.testing.assert_allclose(got, forecast(model.eval(), series.values, origins), rtol=1e-6)


def test_pair_classifier_exports(tmp_path: Path) -> None:
    from lstmkit.tasks.pairs.model import PairClassifier, PairsConfig

    folder = tmp_path / "pairs"
    PairClassifier(PairsConfig(["a", "b", "c"], hidden_sizes=[4, 3], embedding_size=5)).save_pretrained(folder)
    model = PairClassifier.from_pretrained(folder)
    try:  # two sentences of their own lengths: verified at a and b of different lengths
        exported = export_pretrained(folder, tmp_path / "pairs.onnx")
    except ExportError as error:  # the model sizes its padding in Python: only a fixed length exports
        assert "a_sequence" in str(error) and "dynamic_sequence=False" in str(error)
        exported = export_pretrained(folder, tmp_path / "pairs.onnx", steps=7, dynamic_sequence=False)
    assert exported.input_names == ["a", "a_lengths", "b", "b_lengths"]
    a, b = torch.randint(3, 6, (4, 7)), torch.randint(3, 6, (4, 8))  # the example's lengths: 7 and 8
    a_lengths, b_lengths = torch.tensor([7, 2, 5, 1]), torch.tensor([8, 8, 3, 1])
    feed = {"a": a, "a_lengths": a_lengths, "b": b, "b_lengths": b_lengths}
    assert_close(run_onnx(tmp_path / "pairs.onnx", feed), [model(a, a_lengths, b, b_lengths)])


def test_command_line_errors_and_a_static_sequence(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "onnx", str(tmp_path / "nowhere"), str(tmp_path / "a.onnx")])
    assert result.exit_code == 2 and "no config.json" in result.output
    folder = charlm_folder(tmp_path, cell="layernorm", num_layers=1)
    model = CharLM.from_pretrained(folder)
    dynamic, static = tmp_path / "dynamic.onnx", tmp_path / "static.onnx"
    result = runner.invoke(app, ["export", "onnx", str(folder), str(dynamic)])
    assert result.exit_code == 0 and "ids {0: batch, 1: sequence}" in result.output, result.output
    result = runner.invoke(app, ["export", "onnx", str(folder), str(static), "--static-sequence", "--steps", "6"])
    assert result.exit_code == 0 and "ids {0: batch}" in result.output, result.output
    for batch, steps in SIZES:
        ids = torch.randint(0, 11, (batch, steps))
        assert_close(run_onnx(dynamic, {"ids": ids}), flat(model(ids)))
    ids = torch.randint(0, 11, (5, 6))
    assert_close(run_onnx(static, {"ids": ids}), flat(model(ids)))


def test_lstmkit_imports_and_says_what_to_install_without_onnx() -> None:
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
import torch, lstmkit, lstmkit.cli
from lstmkit.interop.onnx import export_onnx
try:
    export_onnx(lstmkit.LSTM(2, 3), torch.randn(4, 1, 2), "never.onnx")
except ImportError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'lstmkit[onnx]'" in result.stdout
