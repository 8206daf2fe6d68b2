"""lstmkit.inspect: gate traces against a hand computation, gradient flow against autograd through
the layer's own forward and finite differences, the long-lag generators against their definitions,
the figures and the report opened again, and bad input."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lstmkit
from lstmkit.cell_kinds import recurrent_layer
from lstmkit.cli import app
from lstmkit.inspect import cli as inspect_cli
from lstmkit.inspect import cost, gradients, longlag, plots, report, traces
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig
from lstmkit.tasks.classify.model import ClassifyConfig, SequenceClassifier
from lstmkit.tasks.forecast.model import ForecastConfig, Forecaster

runner = CliRunner()

TINY_LONG_LAG = longlag.LongLagSettings(
    lags=(6, 12), kinds=("rnn", "gru", "lstm"), extra_runs=(), hidden_size=8, steps=6, steps_by_task={}, batch_size=8,
    eval_every=3, eval_size=16, gradient_lag=12,
)  # fmt: skip
TINY_COST = cost.CostSettings(kinds=("rnn", "gru", "lstm"), input_size=4, hidden_size=8, steps=5, batch_size=2,
                              repeats=1, warmup=0)  # fmt: skip


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def char_model_folder(tmp_path: Path, cell: str = "lstm") -> Path:
    torch.manual_seed(0)
    model = CharLM(CharLMConfig('abc ()"\n', cell=cell, hidden_size=10, embedding_size=4))
    return model.save_pretrained(tmp_path / f"char_{cell}")


def classify_folder(tmp_path: Path) -> Path:
    config = ClassifyConfig(["a", "b"], ["x", "y"], [0.0, 0.0], [1.0, 1.0], hidden_size=6)
    return SequenceClassifier(config).save_pretrained(tmp_path / "classify")


# -- gate traces -------------------------------------------------------------------------------------


def test_lstm_trace_matches_a_hand_computation() -> None:
    layer = lstmkit.LSTM(3, 4)
    series = torch.randn(7, 3)
    trace = traces.trace_model(layer, series)["l0"]
    assert trace.names == ("i", "f", "g", "o", "c", "h")
    assert trace.labels == [str(step) for step in range(7)] and trace.memory == "c"
    w_ih, w_hh = layer.weight_ih_l0.detach().double().numpy(), layer.weight_hh_l0.detach().double().numpy()
    b = (layer.bias_ih_l0 + layer.bias_hh_l0).detach().double().numpy()
    h, c = np.zeros(4), np.zeros(4)
    for step, x in enumerate(series.double().numpy()):
        z = w_ih @ x + w_hh @ h + b
        i, f, g, o = sigmoid(z[0:4]), sigmoid(z[4:8]), np.tanh(z[8:12]), sigmoid(z[12:16])
        c = f * c + i * g
        h = o * np.tanh(c)
        for name, expected in dict(i=i, f=f, g=g, o=o, c=c, h=h).items():
            assert trace.values[name].shape == (7, 4)
            np.testing.assert_allclose(trace.values[name][step].numpy(), expected, atol=1e-5, err_msg=f"{name}@{step}")


def test_gru_trace_matches_a_hand_computation() -> None:
    layer = lstmkit.GRU(2, 3, batch_first=True)
    series = torch.randn(5, 2)
    trace = traces.trace_model(layer, series)["l0"]
    assert trace.names == ("r", "z", "n", "h") and trace.memory == "h"
    w_ih, w_hh = layer.weight_ih_l0.detach().double().numpy(), layer.weight_hh_l0.detach().double().numpy()
    b_ih, b_hh = layer.bias_ih_l0.detach().double().numpy(), layer.bias_hh_l0.detach().double().numpy()
    h = np.zeros(3)
    for step, x in enumerate(series.double().numpy()):
        xg, hg = w_ih @ x + b_ih, w_hh @ h + b_hh
        r, z = sigmoid(xg[:3] + hg[:3]), sigmoid(xg[3:6] + hg[3:6])
        n = np.tanh(xg[6:] + r * hg[6:])
        h = (1 - z) * n + z * h
        for name, expected in dict(r=r, z=z, n=n, h=h).items():
            np.testing.assert_allclose(trace.values[name][step].numpy(), expected, atol=1e-5, err_msg=f"{name}@{step}")


def test_stacked_bidirectional_trace_has_every_layer_and_matches_the_output() -> None:
    layer = lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    series = torch.randn(6, 3)
    found = traces.trace_model(layer, series)
    assert list(found) == ["l0", "l0_reverse", "l1", "l1_reverse"]
    output, _ = layer(series.unsqueeze(0))
    torch.testing.assert_close(found["l1"].values["h"], output[0, :, :4])
    torch.testing.assert_close(found["l1_reverse"].values["h"], output[0, :, 4:])


def test_character_model_trace_reads_the_text_through_the_embedding(tmp_path: Path) -> None:
    model = CharLM.from_pretrained(char_model_folder(tmp_path))
    text = 'ab (c) "a"\nb'
    trace = traces.trace_model(model, text)["l0"]
    assert trace.labels == list(text) and trace.steps == len(text) and trace.units == 10
    with torch.no_grad():
        output, _ = model.rnn(model.embedding(model.vocabulary.encode(text))[None])
    torch.testing.assert_close(trace.values["h"], output[0])


def test_classifier_series_is_standardised_like_the_model_does() -> None:
    config = ClassifyConfig(["a", "b"], ["x", "y"], [1.0, -2.0], [2.0, 0.5], hidden_size=5)
    model = SequenceClassifier(config)
    series = np.array([[1.0, 0.0], [3.0, -2.0], [5.0, 1.0]], dtype=np.float32)
    trace = traces.trace_model(model, series)["l0"]
    standardised = (torch.tensor(series) - torch.tensor([1.0, -2.0])) / torch.tensor([2.0, 0.5])
    with torch.no_grad():
        output, _ = model.rnn(standardised[None])
    torch.testing.assert_close(trace.values["h"], output[0])


def test_forecaster_series_is_standardised_and_relative_like_the_model_does() -> None:
    config = ForecastConfig(["y", "x"], [10.0, 1.0], [2.0, 4.0], window=5, horizon=2, hidden_size=6)
    model = Forecaster(config)
    series = np.array([[10.0, 1.0], [12.0, 5.0], [8.0, -3.0], [11.0, 2.0], [14.0, 0.0]], dtype=np.float32)
    trace = traces.trace_model(model, series)["l0"]
    z = (torch.tensor(series) - torch.tensor([10.0, 1.0])) / torch.tensor([2.0, 4.0])
    with torch.no_grad():
        output, _ = model.rnn((z - z[-1])[None])
        change = model.head(output[0, -1])
    torch.testing.assert_close(trace.values["h"], output[0])
    torch.testing.assert_close(model(z[None])[0], z[-1, 0] + change)  # what the model itself reads


def test_text_features_and_interesting_units_find_a_counting_unit() -> None:
    text = "ab cd\nabc (d) e\n"
    features = traces.text_features(text)
    assert features["position in line"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert features["inside brackets"].tolist() == [0] * 10 + [1, 1, 1] + [0] * 3
    assert features["inside quotes"].max() == 0
    steps = len(text)
    generator = torch.Generator().manual_seed(0)
    c = 0.01 * torch.randn(steps, 5, generator=generator)
    c[:, 3] = torch.tensor(features["position in line"]) / 5  # a unit that counts characters in the line
    c[:, 1] = 3 * torch.randn(steps, generator=generator)  # a loud, meaningless unit
    trace = traces.GateTrace("l0", "LSTMCell", list(text), {"c": c, "h": torch.tanh(c)})
    chosen = traces.interesting_units(trace, count=4)
    by_reason = {choice.reason: choice for choice in chosen}
    assert by_reason["position in line"].unit == 3 and by_reason["position in line"].score == pytest.approx(1.0)
    reasons = [choice.reason for choice in chosen]
    assert reasons[0] == "position in line" and reasons[1] in {"inside brackets", "position in word"}
    assert reasons[2:] == ["variance", "variance"]
    assert 1 in {choice.unit for choice in chosen}  # the loud unit, for brackets by chance or for its variance
    assert traces.highest_variance_units(trace, 1)[0].unit == 1
    assert len({choice.unit for choice in chosen}) == len(chosen) == 4


def test_unit_correlations_against_numpy() -> None:
    values = np.random.default_rng(0).normal(size=(20, 3))
    feature = np.arange(20.0)
    expected = [np.corrcoef(values[:, unit], feature)[0, 1] for unit in range(3)]
    np.testing.assert_allclose(traces.unit_correlations(values, feature), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("make", "data", "message"),
    [
        ("char", "", "the text is empty: expected at least one character"),
        ("char", [0.1, 0.2], "reads text, got list: pass a string"),
        ("classify", "hello", "a text needs a character model (charlm); got a classify model"),
        ("classify", np.zeros((4, 3)), "reads 2 feature(s) per step, got a series with 3"),
        ("classify", np.zeros((0, 2)), "the series is empty"),
        ("linear", [1.0], "expected an lstmkit Recurrent layer or a model whose .rnn is one, got Linear"),
    ],
)
def test_bad_trace_input_says_what_was_expected(make: str, data: object, message: str, tmp_path: Path) -> None:
    models = {
        "char": lambda: CharLM.from_pretrained(char_model_folder(tmp_path)),
        "classify": lambda: SequenceClassifier.from_pretrained(classify_folder(tmp_path)),
        "linear": lambda: torch.nn.Linear(2, 2),
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        traces.trace_model(models[make](), data)


def test_unknown_unit_index_is_a_clear_error() -> None:
    trace = traces.trace_model(lstmkit.LSTM(2, 4), torch.randn(3, 2))["l0"]
    with pytest.raises(ValueError, match=re.escape("unit index 4 out of range: the layer has 4 units, expected 0..3")):
        trace.unit(4)
    with pytest.raises(ValueError, match="unit index -1 out of range"):
        plots.plot_gates(trace, "unused.png", units=[0, -1])
    with pytest.raises(ValueError, match=re.escape("unknown gate or state 'z': this LSTMCell trace has")):
        trace.unit(0, "z")


# -- gradient flow ---------------------------------------------------------------------------------


def _layer(kind: str) -> lstmkit.Recurrent:
    torch.manual_seed(1)
    return recurrent_layer(kind, 2, 3).double()


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm", "peephole"])
def test_state_gradients_equal_autograd_through_the_layers_own_forward(kind: str) -> None:
    """dL_T/dh_t from one backward pass through the unrolled cell must equal the gradient of the
    same loss with respect to the *initial* state of the layer's own forward run on the remaining
    steps x_{t+1..T}, started from the state the traced forward pass had at t. For c_t the total
    derivative (what backpropagation carries: through c_{t+1} and through h_t = o * tanh(c_t)) is
    that partial plus dL/dh_t * dh_t/dc_t, written out from the cell's equations."""
    layer = _layer(kind)
    steps, readout = 6, torch.randn(3, dtype=torch.float64)
    inputs = torch.randn(2, steps, 2, dtype=torch.float64)

    def last_loss(h_last: torch.Tensor) -> torch.Tensor:
        return ((h_last @ readout) ** 2).sum()

    found = gradients.state_gradients(layer, inputs, last_loss)
    with torch.no_grad():
        _, _, trace = layer(inputs, return_gates=True)
    trace = trace["l0"]
    names = ("h", "c") if "c" in trace else ("h",)
    assert set(found) == set(names)
    for t in range(steps):
        state = [trace[name][:, t].clone().unsqueeze(0).requires_grad_(True) for name in names]
        if t == steps - 1:
            loss = last_loss(state[0][0])
        else:
            _, final = layer(inputs[:, t + 1 :], tuple(state) if len(state) > 1 else state[0])
            loss = last_loss((final[0] if len(state) > 1 else final)[0])
        expected = [value[0] for value in torch.autograd.grad(loss, state, allow_unused=True, materialize_grads=True)]
        if "c" in trace:
            c, o = trace["c"][:, t], trace["o"][:, t]
            dh_dc = o * (1 - torch.tanh(c) ** 2)
            if kind == "peephole":  # o = sigmoid(... + w_co * c_t) depends on c_t too
                dh_dc = dh_dc + torch.tanh(c) * o * (1 - o) * layer.weight_co_l0.detach()
            expected[1] = expected[1] + expected[0] * dh_dc
        for name, value in zip(names, expected, strict=True):
            torch.testing.assert_close(found[name][:, t], value, atol=1e-10, rtol=1e-8)


def test_state_gradients_equal_finite_differences() -> None:
    layer = _layer("rnn")
    inputs = torch.randn(1, 5, 2, dtype=torch.float64)
    found = gradients.state_gradients(layer, inputs, lambda h: h.sum() ** 2)
    cell = layer.cell()

    def loss_from(t: int, h: torch.Tensor) -> float:  # run the cell by hand from h_t
        for step in range(t + 1, inputs.shape[1]):
            h = torch.tanh(cell.weight_ih @ inputs[0, step] + cell.bias_ih + cell.weight_hh @ h + cell.bias_hh)
        return float(h.sum() ** 2)

    with torch.no_grad():
        hs, h = [], torch.zeros(3, dtype=torch.float64)
        for step in range(inputs.shape[1]):
            h = torch.tanh(cell.weight_ih @ inputs[0, step] + cell.bias_ih + cell.weight_hh @ h + cell.bias_hh)
            hs.append(h)
        eps = 1e-6
        for t in range(inputs.shape[1]):
            for unit in range(3):
                bump = torch.zeros(3, dtype=torch.float64)
                bump[unit] = eps
                numeric = (loss_from(t, hs[t] + bump) - loss_from(t, hs[t] - bump)) / (2 * eps)
                assert found["h"][0, t, unit].item() == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_gradient_flow_of_the_adding_problem() -> None:
    task = longlag.AddingProblem(30)
    inputs, targets = task.generate(16, torch.Generator().manual_seed(3))
    model = longlag.LongLagModel("rnn", task, 8)
    flow = gradients.gradient_flow(model, task, inputs, targets, "initial")
    assert flow.steps == 30 and flow.cell is None
    with torch.no_grad():  # at the last step dL/dh_T = 2 (w.h_T + b - y) w for L = (w.h_T + b - y)^2
        error = model(inputs).double() - targets.double()
        expected = (2 * error.abs() * model.head.weight.double().norm()).mean()
    assert flow.hidden[-1] == pytest.approx(float(expected), rel=1e-5)
    assert flow.ratio() < 1e-3  # a plain RNN at initialisation forgets within 30 steps
    lstm = gradients.gradient_flow(longlag.LongLagModel("lstm", task, 8), task, inputs, targets, "initial")
    assert lstm.cell is not None and len(lstm.cell) == 30
    assert model.rnn.weight_hh_l0.dtype == torch.float32  # the model itself was not converted


def test_gradient_flow_needs_one_layer_in_one_direction() -> None:
    with pytest.raises(ValueError, match="one layer in one direction, got num_layers=2"):
        gradients.state_gradients(lstmkit.LSTM(2, 3, num_layers=2), torch.randn(1, 4, 2), lambda h: h.sum())
    with pytest.raises(ValueError, match=re.escape("expected inputs (batch, steps >= 1, 2), got shape (1, 4, 3)")):
        gradients.state_gradients(lstmkit.LSTM(2, 3), torch.randn(1, 4, 3), lambda h: h.sum())


# -- long-lag tasks --------------------------------------------------------------------------------


@pytest.mark.parametrize("lag", [2, 7, 50])
def test_adding_problem_target_is_the_sum_of_the_two_marked_values(lag: int) -> None:
    inputs, targets = longlag.AddingProblem(lag).generate(200, torch.Generator().manual_seed(lag))
    assert inputs.shape == (200, lag, 2) and targets.shape == (200,)
    for sequence, target in zip(inputs, targets, strict=True):
        values, markers = sequence[:, 0].tolist(), sequence[:, 1].tolist()
        marked = [step for step, marker in enumerate(markers) if marker == 1.0]
        assert len(marked) == 2 and sum(markers) == 2.0
        assert marked[0] < lag // 2 <= marked[1]
        assert all(0.0 <= value < 1.0 for value in values)
        assert float(target) == pytest.approx(values[marked[0]] + values[marked[1]], abs=1e-6)


def test_adding_problem_chance_level_is_the_error_of_always_answering_one() -> None:
    _, targets = longlag.AddingProblem(10).generate(50_000, torch.Generator().manual_seed(0))
    assert float(((targets - 1) ** 2).mean()) == pytest.approx(longlag.AddingProblem.chance, abs=0.005)


@pytest.mark.parametrize(("lag", "length", "symbols"), [(1, 3, 4), (10, 10, 8), (25, 5, 8)])
def test_copy_memory_target_repeats_the_symbols_after_the_delay(lag: int, length: int, symbols: int) -> None:
    task = longlag.CopyMemory(lag, symbols=symbols, length=length)
    inputs, targets = task.generate(100, torch.Generator().manual_seed(1))
    assert inputs.shape == targets.shape == (100, lag + 2 * length)
    for sequence, target in zip(inputs.tolist(), targets.tolist(), strict=True):
        memory = sequence[:length]
        assert all(1 <= symbol <= symbols for symbol in memory)
        delimiter_at = length + lag - 1  # lag - 1 blanks after the symbols, then the delimiter
        assert sequence[delimiter_at] == symbols + 1
        assert [s for step, s in enumerate(sequence) if step >= length and step != delimiter_at] == [0] * (
            lag + length - 1
        )
        assert target == [0] * (lag + length) + memory  # the recall starts right after the delimiter
    guess = torch.randint(1, symbols + 1, targets.shape, generator=torch.Generator().manual_seed(2))
    accuracy = task.score(torch.nn.functional.one_hot(guess, symbols + 1).float(), targets)
    assert accuracy == pytest.approx(task.chance, abs=0.05)


def test_generators_repeat_with_the_seed_and_reject_bad_lags() -> None:
    for task in (longlag.AddingProblem(9), longlag.CopyMemory(9)):
        first = task.generate(4, torch.Generator().manual_seed(5))
        second = task.generate(4, torch.Generator().manual_seed(5))
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="lag must be an integer of at least 2, got 1"):
        longlag.AddingProblem(1)
    with pytest.raises(ValueError, match="unknown long-lag task 'sort': expected one of"):
        longlag.make_task("sort", 10)
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        longlag.LongLagSettings(kinds=("transformer",))


def test_long_lag_training_is_repeatable_and_records_curves() -> None:
    settings = longlag.LongLagSettings(**{**TINY_LONG_LAG.__dict__, "lags": (6,), "tasks": ("adding", "copy")})
    first, _ = longlag.run_long_lag(settings)
    second, _ = longlag.run_long_lag(settings)
    assert [run.curve for run in first] == [run.curve for run in second]
    assert len(first) == 2 * 3 and all([step for step, _ in run.curve] == [0, 3, 6] for run in first)
    table = longlag.long_lag_table(first)
    assert "| adding (mse, lower is better) | lstm |" in table and "| copy (accuracy, higher is better) |" in table


def test_forget_bias_only_touches_forget_gates() -> None:
    settings = longlag.LongLagSettings(hidden_size=4, forget_bias=2.0, init={})
    lstm = longlag.initial_model("lstm", longlag.AddingProblem(5), settings)
    assert lstm.rnn.bias_ih_l0[4:8].tolist() == [2.0] * 4 and lstm.rnn.bias_hh_l0[4:8].tolist() == [0.0] * 4
    gru = longlag.initial_model("gru", longlag.AddingProblem(5), settings)
    plain = longlag.initial_model("gru", longlag.AddingProblem(5), longlag.LongLagSettings(hidden_size=4, init={}))
    assert torch.equal(gru.rnn.bias_ih_l0, plain.rnn.bias_ih_l0)


@pytest.mark.slow
def test_lstm_learns_the_adding_problem_where_chance_does_not() -> None:
    settings = longlag.LongLagSettings(hidden_size=32, steps=400, lr=1e-2, eval_every=100)
    _, run = longlag.train_long_lag("lstm", longlag.AddingProblem(10), settings)
    assert run.curve[0][1] > longlag.AddingProblem.chance and run.final < longlag.AddingProblem.chance / 4


# -- cost ------------------------------------------------------------------------------------------


def test_parameter_counts_equal_torch_nn() -> None:
    rows = cost.measure_cost(TINY_COST)
    counts = {row.kind: row.parameters for row in rows}
    for kind, reference in (("rnn", torch.nn.RNN), ("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM)):
        assert counts[kind] == cost.parameter_count(reference(4, 8))
    assert counts["gru"] / counts["lstm"] == 0.75
    assert all(value > 0 for row in rows for value in [*row.forward_ms.values(), *row.train_ms.values()])
    assert "| gru | 336 | 0.75 |" in cost.cost_table(rows)


# -- figures and report ----------------------------------------------------------------------------


def _assert_png(path: Path, min_size: int = 100) -> None:
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_size and image.shape[1] >= min_size, (path, image.shape)
    assert float(np.ptp(image[..., :3])) > 0.2, f"{path} looks empty"


def test_plots_are_written_and_open(tmp_path: Path) -> None:
    """Every plot from hand-made results (the report test draws them from real runs): a GRU trace
    (no cell state), a gradient that underflowed to zero, a run that never left chance."""
    model = CharLM.from_pretrained(char_model_folder(tmp_path, cell="gru"))
    text = 'abc (ab) "c"\nab c'
    trace = traces.trace_model(model, text)["l0"]
    chosen = traces.interesting_units(trace, 4)
    runs = [
        longlag.LongLagRun(task, lag, kind, metric, chance, [(0, start), (50, end)])
        for task, metric, chance, start, end in (
            ("adding", "mse", 1 / 6, 0.9, 0.002),
            ("copy", "accuracy", 0.125, 0.1, 0.9),
        )
        for lag in (10, 50)
        for kind in ("rnn", "lstm")
    ]
    flows = [
        gradients.GradientFlow("rnn", "initial", [0.0, 1e-30, 1e-3, 1.0]),
        gradients.GradientFlow("lstm", "initial", [1e-2, 1e-1, 0.5, 1.0], [1e-2, 1e-1, 0.5, 1.0]),
    ]
    rows = [cost.CostRow("gru", 3, {"auto": 1.0}, {"auto": 2.0}), cost.CostRow("lstm", 4, {"auto": 1.5}, {"auto": 3.0})]
    written = [
        plots.plot_gates(trace, tmp_path / "gates.png"),
        plots.plot_gates(trace, tmp_path / "gates_two.png", units=[2, 0]),
        plots.plot_unit_states(trace, chosen, tmp_path / "states.png", features=traces.text_features(text)),
        plots.plot_gradient_flow(flows, tmp_path / "gradient_flow.png"),
        plots.plot_long_lag(runs, tmp_path / "long_lag.png"),
        plots.plot_learning_curves(runs, tmp_path / "curves.png"),
        plots.plot_cost(rows, tmp_path / "cost.png"),
    ]
    for path in written:
        _assert_png(path)
    for plot in (plots.plot_gradient_flow, plots.plot_long_lag, plots.plot_learning_curves, plots.plot_cost):
        with pytest.raises(ValueError, match="no .* to plot"):
            plot([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_report_embeds_every_figure(tmp_path: Path) -> None:
    folder = char_model_folder(tmp_path)
    settings = report.ReportSettings(checkpoint=folder, text='ab (c)\n"a" b', long_lag=TINY_LONG_LAG, cost=TINY_COST)
    path = report.build_report(tmp_path / "report", settings, log=lambda message: None)
    page = path.read_text(encoding="utf-8")
    pngs = sorted((tmp_path / "report").glob("*.png"))
    assert {p.name for p in pngs} == {"gates.png", "cell_states.png", "gradient_flow.png", "long_lag.png",
                                       "long_lag_curves.png", "cost.png"}  # fmt: skip
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert sorted(base64.b64decode(data) for data in embedded) == sorted(p.read_bytes() for p in pngs)
    for png in pngs:
        _assert_png(png)
    assert page.count("<figcaption>") == len(pngs) and "src='http" not in page and "<table>" in page
    results = (tmp_path / "report" / "results.md").read_text()
    assert "| adding (mse, lower is better) | rnn |" in results and "| lstm | 448 | 1.00 |" in results
    assert "| lstm | chrono+orthogonal | 0.01 |" in results and "<td>chrono+orthogonal</td>" in page


def test_report_rejects_a_checkpoint_of_another_task(tmp_path: Path) -> None:
    settings = report.ReportSettings(checkpoint=classify_folder(tmp_path), long_lag=TINY_LONG_LAG, cost=TINY_COST)
    with pytest.raises(ValueError, match="holds a classify model; the report traces a character model"):
        report.build_report(tmp_path / "report", settings, log=lambda message: None)


# -- the command line ------------------------------------------------------------------------------


def _normalised(output: str) -> str:
    return " ".join(output.split())


def test_cli_gates_writes_figures_and_names_the_units(tmp_path: Path) -> None:
    folder = char_model_folder(tmp_path, cell="gru")
    result = runner.invoke(app, ["inspect", "gates", "-c", str(folder), "--text", "ab (c)\nab", "--out",
                                 str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unit" in result.output and (tmp_path / "out" / "gates.png").is_file()
    _assert_png(tmp_path / "out" / "cell_states.png")
    result = runner.invoke(app, ["inspect", "gates", "-c", str(folder), "--text", "abc", "--units", "1,3", "--out",
                                 str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unit 1" in result.output and "unit 3" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--text", ""], "the text is empty: expected at least one character"),
        (["--text", "abc", "--units", "2,99"], "unit index 99 out of range: the layer has 10 units, expected 0..9"),
        (["--text", "abc", "--units", "two"], "--units: expected comma-separated int values"),
        (["--text", "abc", "--layer", "l3"], "unknown layer 'l3': this model has l0"),
        (["--values", "1,2"], "reads text, got ndarray: pass a string"),
        ([], "expected exactly one input: --text (a character model), --series FILE or --values LIST, got none"),
    ],
)
def test_cli_gates_bad_input_exits_2(arguments: list[str], message: str, tmp_path: Path) -> None:
    folder = char_model_folder(tmp_path)
    result = runner.invoke(app, ["inspect", "gates", "-c", str(folder), "--out", str(tmp_path), *arguments])
    assert result.exit_code == 2, result.output
    assert message in _normalised(result.output)


def test_cli_text_escapes() -> None:
    assert inspect_cli.unescape(r"ROMEO:\nBut\tsoft \\n") == "ROMEO:\nBut\tsoft \\n"


def test_cli_rejects_checkpoints_of_the_wrong_kind(tmp_path: Path) -> None:
    folder = classify_folder(tmp_path)
    result = runner.invoke(app, ["inspect", "gates", "-c", str(folder), "--text", "hello", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "a text needs a character model (charlm); got a classify model" in _normalised(
        result.output
    )
    result = runner.invoke(app, ["inspect", "report", "-c", str(folder), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "holds a classify model" in _normalised(result.output)
    result = runner.invoke(app, ["inspect", "gates", "-c", str(tmp_path / "missing"), "--text", "a"])
    assert result.exit_code == 2 and "error:" in result.output


def test_cli_series_file_feeds_a_classifier(tmp_path: Path) -> None:
    folder = classify_folder(tmp_path)
    series = tmp_path / "series.csv"
    series.write_text("x,y\n0.1,0.2\n0.3,0.4\n0.5,0.6\n")
    result = runner.invoke(app, ["inspect", "gates", "-c", str(folder), "--series", str(series), "--out",
                                 str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    series.write_text("0.1,0.2\n0.3,oops\n")
    result = runner.invoke(app, ["inspect", "gates", "-c", str(folder), "--series", str(series)])
    assert result.exit_code == 2 and "line 2: expected numbers, got '0.3,oops'" in _normalised(result.output)


def test_cli_experiments_run_with_tiny_budgets(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    tiny = ["--steps", "3", "--hidden-size", "4", "--out", out]
    result = runner.invoke(app, ["inspect", "long-lag", "--tasks", "adding", "--lags", "5", "--kinds", "rnn,lstm",
                                 *tiny])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| adding (mse, lower is better) | lstm |" in result.output
    result = runner.invoke(app, ["inspect", "gradients", "--lag", "6", "--kinds", "rnn,gru", *tiny])
    assert result.exit_code == 0, result.output
    assert "|dL/dh_1| / |dL/dh_T|" in result.output
    result = runner.invoke(app, ["inspect", "cost", "--kinds", "rnn,gru", "--input-size", "3", "--hidden-size", "4",
                                 "--steps", "3", "--batch-size", "2", "--repeats", "1", "--out", out])  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("long_lag.png", "long_lag_curves.png", "gradient_flow.png", "cost.png"):
        _assert_png(tmp_path / "out" / name)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["long-lag", "--lags", "10,x"], "--lags: expected comma-separated int values such as 10,50, got '10,x'"),
        (["long-lag", "--kinds", "lstm,transformer", "--steps", "1"], "unknown cell 'transformer'"),
        (["long-lag", "--tasks", "sort"], "unknown long-lag task 'sort'"),
        (["gradients", "--kinds", "rnn,nope"], "unknown cell 'nope'"),
        (["cost", "--kinds", "nope"], "unknown cell 'nope'"),
    ],
)
def test_cli_experiment_bad_arguments_exit_2(arguments: list[str], message: str) -> None:
    result = runner.invoke(app, ["inspect", *arguments])
    assert result.exit_code == 2, result.output
    assert message in _normalised(result.output)
