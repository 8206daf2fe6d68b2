"""lstmkit's layers compose with PyTorch's machinery as torch.nn's do: higher-order autograd,
torch.func transforms, autocast, torch.compile, torch.export and parametrizations. Every check is
against torch.nn.LSTM/GRU/RNN with copied weights, or against finite differences."""

from __future__ import annotations

import pytest
import torch
from core_helpers import torch_nn_under_autocast
from torch.nn.utils import parametrizations, parametrize

import lstmkit

PAIRS = {
    "lstm": (lstmkit.LSTM, torch.nn.LSTM, {}),
    "gru": (lstmkit.GRU, torch.nn.GRU, {}),
    "rnn": (lstmkit.RNN, torch.nn.RNN, {}),
    "lstm-2-bi": (lstmkit.LSTM, torch.nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    "lstm-proj": (lstmkit.LSTM, torch.nn.LSTM, {"proj_size": 3}),
}
T, B, I, H = 5, 3, 4, 6


def twins(name: str, dtype=torch.float32, input_size: int = I, hidden_size: int = H, **extra):
    ours_cls, torch_cls, options = PAIRS[name]
    ours = ours_cls(input_size, hidden_size, dtype=dtype, **options, **extra)
    theirs = torch_cls(input_size, hidden_size, dtype=dtype, **options, **extra)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", list(PAIRS))
def test_gradient_penalty_matches_torch(name: str) -> None:
    """Double backward: d/dW of ||d out/d x||^2 (a gradient penalty) equals torch.nn's."""
    results = []
    for module in twins(name):
        x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(0), requires_grad=True)
        (dx,) = torch.autograd.grad(module(x)[0].sum(), x, create_graph=True)
        assert dx.requires_grad
        dx.pow(2).sum().backward()
        results.append(grads(module))
    ours, theirs = results
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "lstm-proj"])
def test_gradgradcheck(name: str) -> None:
    # finite differences cost one double backward per input and output element: the smallest sizes
    # that keep every gate distinct (and the projection smaller than the hidden size)
    ours, _ = twins(name, dtype=torch.float64, input_size=2, hidden_size=4)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    weights = [ours.weight_ih_l0, ours.weight_hh_l0]

    def function(x, w_ih, w_hh):
        with parametrize.cached():
            output, _ = torch.func.functional_call(ours, {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh}, (x,))
        return output

    assert torch.autograd.gradgradcheck(function, (x, *weights))


def test_functorch_transforms_match_torch() -> None:
    ours, theirs = twins("lstm-2-bi")
    x = torch.randn(T, B, I)
    jac = [torch.func.jacrev(lambda a, m=m: m(a)[0])(x) for m in (ours, theirs)]
    torch.testing.assert_close(jac[0], jac[1], rtol=1e-4, atol=1e-5)
    vectorized = torch.autograd.functional.jacobian(lambda a: ours(a)[0].sum(0), x, vectorize=True)
    torch.testing.assert_close(vectorized, jac[1].sum(0), rtol=1e-4, atol=1e-5)
    batched = []
    for module in (ours, theirs):
        xx = x.clone().requires_grad_()
        out = module(xx)[0]
        cotangents = torch.randn(4, *out.shape, generator=torch.Generator().manual_seed(1))
        batched.append(torch.autograd.grad(out, xx, cotangents, is_grads_batched=True)[0])
    torch.testing.assert_close(batched[0], batched[1], rtol=1e-4, atol=1e-5)
    stacked = torch.randn(2, T, B, I)
    mapped = torch.func.vmap(lambda a: ours(a)[0])(stacked)  # torch.nn.LSTM has no batching rule: a loop
    torch.testing.assert_close(mapped, torch.stack([theirs(a)[0] for a in stacked]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_autocast_trains_with_float32_master_weights(name: str) -> None:
    """Under bf16 autocast the layers keep float32 weights and gradients and return torch.nn's dtype
    (bfloat16 for the LSTM, float32 for the GRU); outputs and gradients are within bfloat16
    tolerance of float32 torch.nn."""
    ours, theirs = twins(name)
    x = torch.randn(T, B, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, state = ours(x)
    autocast_reference = torch_nn_under_autocast(theirs, x)  # None: torch.nn.LSTM cannot run on this CPU
    assert output.dtype == (torch.float32 if name == "gru" else torch.bfloat16)
    assert autocast_reference is None or output.dtype == autocast_reference[0].dtype
    assert all(s.dtype == output.dtype for s in (state if isinstance(state, tuple) else (state,)))
    output.float().sum().backward()
    want = theirs(x)[0]
    want.sum().backward()
    torch.testing.assert_close(output.float(), want, rtol=2e-2, atol=2e-2)
    for key, value in grads(theirs).items():
        assert grads(ours)[key].dtype == torch.float32
        assert (grads(ours)[key] - value).norm() <= 0.05 * value.norm(), key


@pytest.mark.parametrize("name", ["gru", "lstm-2-bi"])
def test_compile_fullgraph_trains_like_eager(name: str) -> None:
    ours, _ = twins(name)
    seen: list[str] = []

    def backend(graph_module, example_inputs):
        seen.extend(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return graph_module.forward

    compiled = torch.compile(ours, fullgraph=True, backend=backend)
    results = []
    for run in (compiled, ours):
        x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(2), requires_grad=True)
        run(x, lengths=torch.tensor([5, 2, 4]))[0].sum().backward()
        results.append((x.grad, grads(ours)))
        ours.zero_grad()
    assert "lstmkit.sequence_forward.default" in seen  # the recurrence is one operator in the graph
    torch.testing.assert_close(results[0][0], results[1][0])
    for key, value in results[1][1].items():
        torch.testing.assert_close(results[0][1][key], value)


@pytest.mark.slow
def test_compile_with_inductor_matches_torch() -> None:
    ours, theirs = twins("lstm")
    x = torch.randn(T, B, I)
    torch.testing.assert_close(torch.compile(ours, fullgraph=True)(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_export_with_dynamic_batch_and_length_matches_eager(name: str) -> None:
    ours, theirs = twins(name)
    steps, batch = torch.export.Dim("steps", min=2), torch.export.Dim("batch", min=2)
    program = torch.export.export(ours, (torch.randn(T, B, I),), dynamic_shapes=({0: steps, 1: batch},))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "lstmkit.sequence_forward.default" in targets
    for shape in ((9, 2, I), (3, 7, I)):
        x = torch.randn(shape)
        torch.testing.assert_close(program.module()(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-6)


PARAMETRIZATIONS = {
    "weight_norm": lambda m, name: parametrizations.weight_norm(m, name),
    "spectral_norm": lambda m, name: parametrizations.spectral_norm(m, name),
    "orthogonal": lambda m, name: parametrizations.orthogonal(m, name),
    "legacy weight_norm": lambda m, name: torch.nn.utils.weight_norm(m, name),
}


@pytest.mark.parametrize("kind", list(PARAMETRIZATIONS))
def test_parametrizations_train_like_torch(kind: str) -> None:
    ours, theirs = twins("gru")
    name = "weight_ih_l0" if kind == "orthogonal" else "weight_hh_l0"
    for module in (ours, theirs):
        torch.manual_seed(3)  # spectral norm draws its power-iteration vectors
        PARAMETRIZATIONS[kind](module, name)
        # in eval mode spectral norm keeps its vectors: torch.nn evaluates a weight twice per call
        # (one power iteration each), lstmkit once
        module.eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I)
    for module in (ours, theirs):
        module(x)[0].pow(2).sum().backward()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-6)
    for key, value in grads(theirs).items():
        torch.testing.assert_close(grads(ours)[key], value, rtol=1e-4, atol=1e-5)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())


def test_explain_names_the_engine_and_why() -> None:
    lstm = lstmkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    assert lstmkit.engine.explain(lstm, x).engine == "native"
    with torch.no_grad():
        choice = lstmkit.engine.explain(lstm, x)
    assert choice.engine == "torch" and "inference" in choice.reason
    with torch.no_grad():  # one step of one sequence (text generation, streaming): the native loop
        assert lstmkit.engine.explain(lstm, x[:1, :1]).engine == "native"
    lengths = torch.tensor([T, T - 1, 1])  # B = 3
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert lstmkit.engine.explain(lstm, x).engine == "torch"  # oneDNN's bf16 forward, or float32's
        # torch's packed LSTM has no oneDNN forward, in bf16 or float32: the native loop is faster
        assert lstmkit.engine.explain(lstm, x, lengths=lengths).engine == "native"
    with torch.no_grad():
        assert lstmkit.engine.explain(lstm, x, lengths=lengths).engine == "native"
    assert lstmkit.engine.explain(lstm, x, return_gates=True).engine == "reference"
    assert lstmkit.engine.explain(lstmkit.LSTM(I, H, engine="reference"), x).engine == "reference"
    peephole = lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, I, H)
    assert "peephole_lstm" in lstmkit.engine.explain(peephole, x).reason


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_jit_trace_passes_its_check_and_matches_torch(name: str) -> None:
    ours, theirs = twins(name)
    traced = torch.jit.trace(ours, (torch.randn(T, B, I),))  # raises if its sanity check fails
    x = torch.randn(8, 2, I, requires_grad=True)
    found = [torch.autograd.grad(run(x)[0].pow(2).sum(), x)[0] for run in (traced, theirs)]
    torch.testing.assert_close(traced(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(found[0], found[1], rtol=1e-4, atol=1e-5)
