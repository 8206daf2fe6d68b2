"""Dynamic int8 quantization: lstmkit.quantize_dynamic gives what torch's own quantize_dynamic gives
for a torch.nn model holding the same weights (the oracle: torch's quantized kernels, run on a model
built here from torch.nn and load_state_dict), stays near the float model, stores int8 weights, and
refuses what torch's quantized modules cannot compute by name. torch's quantize_dynamic either swaps
lstmkit layers (mapping=dynamic_quant_mappings()) or warns that it left them in float."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.quantization as tq
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.keras import LSTM as KerasLSTM
from lstmkit.quantization import QuantizationSkippedWarning, dynamic_quant_mappings, quantization_problems

pytestmark = [
    pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning"),
]

FLOAT_TOLERANCE = 2e-2  # int8 weights and on-the-fly uint8 activations, unit-scale input, hidden 16
CONFIGS = {
    "1-layer": {},
    "2-layer": {"num_layers": 2},
    "bidirectional": {"bidirectional": True},
    "2-layer-bi-batch-first": {"num_layers": 2, "bidirectional": True, "batch_first": True},
}
KINDS = {"lstm": (lstmkit.LSTM, nn.LSTM), "gru": (lstmkit.GRU, nn.GRU)}


def flat(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in flat(item)]


def torch_oracle(layer: lstmkit.Recurrent, torch_class: type[nn.Module], dtype=torch.qint8, **options) -> nn.Module:
    """torch's quantize_dynamic applied to a torch.nn layer given the lstmkit layer's state_dict (inside
    a container: torch swaps only submodules)."""
    reference = torch_class(layer.input_size, layer.hidden_size, **options)
    reference.load_state_dict(layer.state_dict())
    return tq.quantize_dynamic(nn.Sequential(reference), dtype=dtype)[0]


def inputs(layer: lstmkit.Recurrent, batch: int = 3, steps: int = 6) -> torch.Tensor:
    shape = (batch, steps, layer.input_size) if layer.batch_first else (steps, batch, layer.input_size)
    return torch.randn(shape)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_quantized_layer_is_torchs_quantized_layer_and_near_the_float_one(kind, config) -> None:
    ours_class, torch_class = kind
    layer = ours_class(8, 16, **config).eval()
    quantized = lstmkit.quantize_dynamic(layer)
    oracle = torch_oracle(layer, torch_class, **config)
    assert type(quantized) is type(oracle) is {nn.LSTM: nnqd.LSTM, nn.GRU: nnqd.GRU}[torch_class]
    x = inputs(layer)
    with torch.no_grad():
        got, want, float_out = flat(quantized(x)), flat(oracle(x)), flat(layer(x))
    assert len(got) == len(want) == len(float_out)
    for ours, theirs, exact in zip(got, want, float_out, strict=True):
        assert ours.shape == exact.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        assert (ours - exact).abs().max() < FLOAT_TOLERANCE
    assert not torch.equal(got[0], float_out[0])  # the weights really were quantized


def test_initial_states_and_packed_sequences_go_through() -> None:
    layer = lstmkit.LSTM(5, 12, num_layers=2, bidirectional=True).eval()
    quantized = lstmkit.quantize_dynamic(layer)
    oracle = torch_oracle(layer, nn.LSTM, num_layers=2, bidirectional=True)
    x = torch.randn(7, 3, 5)
    hx = (torch.randn(4, 3, 12) * 0.5, torch.randn(4, 3, 12) * 0.5)
    packed = pack_padded_sequence(x, [7, 2, 5], enforce_sorted=False)
    with torch.no_grad():
        for args in ((x, hx), (packed,), (packed, hx)):
            got, want = quantized(*args), oracle(*args)
            exact = layer(*args)
            got_out, want_out, exact_out = (o[0].data if isinstance(o[0], tuple) else o[0] for o in (got, want, exact))
            torch.testing.assert_close(got_out, want_out, rtol=0, atol=1e-6)
            assert (got_out - exact_out).abs().max() < FLOAT_TOLERANCE
            for ours, theirs in zip(flat(got[1]), flat(want[1]), strict=True):
                torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_weights_are_int8_symmetric_per_tensor_within_half_a_step(kind) -> None:
    ours_class, torch_class = kind
    layer = ours_class(6, 10, num_layers=2, bidirectional=True)
    quantized = lstmkit.quantize_dynamic(layer)
    weights, biases = quantized.get_weight(), quantized.get_bias()
    names = [name for name, _ in layer.named_parameters()]
    assert sorted(weights) + sorted(biases) == sorted(n for n in names if n.startswith("weight")) + sorted(
        n for n in names if n.startswith("bias")
    )
    for name, weight in weights.items():
        original = layer.get_parameter(name).detach()
        assert weight.dtype == torch.qint8 and weight.int_repr().dtype == torch.int8
        assert weight.qscheme() == torch.per_tensor_affine and weight.q_zero_point() == 0  # symmetric
        step = weight.q_scale()
        assert step == pytest.approx(original.abs().max().item() / 127.5, rel=1e-6)  # MinMax over [-128, 127]
        assert (weight.dequantize() - original).abs().max() <= step / 2 + 1e-7
    for name, bias in biases.items():
        assert bias.dtype == torch.float32 and torch.equal(bias, layer.get_parameter(name).detach())


def test_float16_weights() -> None:
    layer = lstmkit.GRU(4, 8, num_layers=2, batch_first=True).eval()
    quantized = lstmkit.quantize_dynamic(layer, dtype=torch.float16)
    oracle = torch_oracle(layer, nn.GRU, dtype=torch.float16, num_layers=2, batch_first=True)
    assert isinstance(quantized, nnqd.GRU) and quantized.dtype == torch.float16
    x = inputs(layer)
    with torch.no_grad():
        torch.testing.assert_close(quantized(x)[0], oracle(x)[0], rtol=0, atol=1e-6)
        assert (quantized(x)[0] - layer(x)[0]).abs().max() < 1e-3


def test_unsupported_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match=r"dtype must be torch.qint8 or torch.float16.*torch.quint8"):
        lstmkit.quantize_dynamic(lstmkit.LSTM(3, 4), dtype=torch.quint8)


class Tagger(nn.Module):
    """Embedding -> lstmkit.LSTM -> Linear, as a model that mixes torch and lstmkit layers."""

    def __init__(self, rnn_class: type[nn.Module] = lstmkit.LSTM) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.rnn = rnn_class(6, 16, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(32, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(ids))[0])


def test_model_mixing_linear_and_lstmkit_lstm_is_quantized_as_torch_quantizes_its_torch_twin() -> None:
    model = Tagger().eval()
    twin = Tagger(nn.LSTM).eval()
    twin.load_state_dict(model.state_dict())
    before = copy.deepcopy(model.state_dict())
    quantized = lstmkit.quantize_dynamic(model)
    oracle = tq.quantize_dynamic(twin)
    assert isinstance(quantized.rnn, nnqd.LSTM) and isinstance(quantized.head, nnqd.Linear)
    assert type(quantized.embed) is nn.Embedding  # torch's default int8 spec leaves embeddings float too
    assert [type(m) for m in quantized.modules()] == [type(m) for m in oracle.modules()]
    ids = torch.randint(0, 20, (3, 9))
    with torch.no_grad():
        got, float_out = quantized(ids), model(ids)
        torch.testing.assert_close(got, oracle(ids), rtol=0, atol=1e-6)
    assert (got - float_out).abs().max() < FLOAT_TOLERANCE
    # not in place: the model given is untouched
    assert isinstance(model.rnn, lstmkit.LSTM)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_inplace_quantizes_the_model_itself() -> None:
    model = Tagger()
    assert model.training
    result = lstmkit.quantize_dynamic(model, inplace=True)
    assert result is model and not model.training
    assert isinstance(model.rnn, nnqd.LSTM) and isinstance(model.head, nnqd.Linear)


def test_a_layer_shared_at_two_paths_is_quantized_at_both() -> None:
    shared = lstmkit.GRU(4, 8)
    model = nn.ModuleDict({"a": shared, "b": nn.Sequential(shared)})
    quantized = lstmkit.quantize_dynamic(model)
    assert isinstance(quantized["a"], nnqd.GRU) and isinstance(quantized["b"][0], nnqd.GRU)
    x = torch.randn(5, 2, 4)
    torch.testing.assert_close(quantized["a"](x)[0], quantized["b"][0](x)[0], rtol=0, atol=0)


def test_bias_free_layers_recurrent_dropout_and_recurrent_over_plain_cells_are_supported() -> None:
    cases = [
        (lstmkit.GRU(4, 8, bias=False), nn.GRU),
        (lstmkit.LSTM(4, 8, num_layers=2, dropout=0.3, recurrent_dropout=0.2), nn.LSTM),
        (lstmkit.Recurrent(lstmkit.LSTMCell, 4, 8, bidirectional=True), nn.LSTM),
        (lstmkit.Recurrent(lstmkit.GRUCell, 4, 8, batch_first=True), nn.GRU),
    ]
    for layer, torch_class in cases:
        layer.eval()
        assert quantization_problems(layer) == []
        reference = torch_class(4, 8, num_layers=layer.num_layers, bidirectional=layer.bidirectional)
        reference.batch_first = layer.batch_first
        state = {name: torch.zeros_like(p) for name, p in reference.named_parameters()}  # zero biases when bias=False
        state.update(layer.state_dict())
        reference.load_state_dict(state)
        oracle = tq.quantize_dynamic(nn.Sequential(reference))[0]
        quantized = lstmkit.quantize_dynamic(layer)
        x = inputs(layer)
        with torch.no_grad():
            torch.testing.assert_close(quantized(x)[0], oracle(x)[0], rtol=0, atol=1e-6)
            assert (quantized(x)[0] - layer(x)[0]).abs().max() < FLOAT_TOLERANCE


def test_parametrized_weights_are_quantized_as_the_layer_computes_with_them() -> None:
    layer = lstmkit.LSTM(4, 8)
    nn.utils.parametrizations.spectral_norm(layer, "weight_hh_l0")
    layer(torch.randn(5, 2, 4))  # training mode: a power iteration
    buffers = {name: b.clone() for name, b in layer.named_buffers()}
    quantized = lstmkit.quantize_dynamic(layer)
    assert layer.training
    assert all(torch.equal(b, buffers[name]) for name, b in layer.named_buffers())  # the original is untouched
    layer.eval()
    effective = layer.weight_hh_l0.detach()
    assert not torch.equal(effective, layer.parametrizations.weight_hh_l0.original)
    stored = quantized.get_weight()["weight_hh_l0"]
    assert (stored.dequantize() - effective).abs().max() <= stored.q_scale() / 2 + 1e-7
    x = torch.randn(6, 3, 4)
    with torch.no_grad():
        assert (quantized(x)[0] - layer(x)[0]).abs().max() < FLOAT_TOLERANCE


class CIFGCell(lstmkit.Cell):
    gate_names = ("i", "g", "o")
    state_names = ("h", "c")

    def pointwise(self, xg, hg, state):
        _, c = state
        i, g, o = (xg + hg).chunk(3, dim=-1)
        i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        c = (1 - i) * c + i * g
        return (o * torch.tanh(c), c), (i, g, o)


class MyLSTM(lstmkit.LSTM):
    pass


REFUSED = {
    "peephole": (lambda: lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 4, 8), "Recurrent", "PeepholeLSTMCell"),
    "layer-norm": (lambda: lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 4, 8), "Recurrent", "LayerNormLSTMCell"),
    "user-cell": (lambda: lstmkit.Recurrent(CIFGCell, 4, 8), "Recurrent", "CIFGCell"),
    "rnn": (lambda: lstmkit.RNN(4, 8), "RNN", "no dynamically quantized RNN layer"),
    "proj-size": (lambda: lstmkit.LSTM(4, 8, proj_size=3), "LSTM", "proj_size=3"),
    "gru-reset-before": (lambda: lstmkit.GRU(4, 8, reset_after=False), "GRU", "reset_after=False"),
    "zoneout": (lambda: lstmkit.LSTM(4, 8, zoneout=0.1), "LSTM", "zoneout=0.1"),
    "merge-sum": (lambda: lstmkit.GRU(4, 8, bidirectional=True, merge_mode="sum"), "GRU", "merge_mode='sum'"),
    "relu": (lambda: lstmkit.LSTM(4, 8, activation="relu"), "LSTM", "activation='relu'"),
    "hard-sigmoid": (lambda: lstmkit.GRU(4, 8, gate_activation="hard_sigmoid"), "GRU", "gate_activation="),
    "float64": (lambda: lstmkit.LSTM(4, 8, dtype=torch.float64), "LSTM", "float64 parameters"),
    "subclass": (lambda: MyLSTM(4, 8), "MyLSTM", "a subclass of lstmkit.LSTM"),
    "standalone-cell": (lambda: lstmkit.LSTMCell(4, 8), "LSTMCell", "a standalone lstmkit cell"),
    "keras-layer": (lambda: KerasLSTM(8, input_size=4), "LSTM", "an lstmkit.keras layer"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_what_torch_cannot_compute_is_refused_by_path(case) -> None:
    build, type_name, what = case
    model = nn.ModuleDict({"encoder": nn.ModuleDict({"rnn": build()}), "head": nn.Linear(8, 2)})
    with pytest.raises(ValueError) as raised:
        lstmkit.quantize_dynamic(model, inplace=True)
    message = str(raised.value)
    assert f"{type_name} at 'encoder.rnn': " in message and what in message
    assert "Supported: lstmkit.LSTM and lstmkit.GRU" in message
    assert type(model["head"]) is nn.Linear  # refused before anything was changed
    assert not isinstance(model["encoder"]["rnn"], nnqd.LSTM | nnqd.GRU)


def test_every_refusal_is_listed_at_once_and_a_root_layer_is_named_root() -> None:
    model = nn.Sequential(lstmkit.LSTM(4, 8, zoneout=0.2, merge_mode="ave", bidirectional=True), lstmkit.RNN(16, 8))
    with pytest.raises(ValueError, match="cannot quantize 2 lstmkit module") as raised:
        lstmkit.quantize_dynamic(model)
    assert "LSTM at '0': zoneout=0.2" in str(raised.value) and "merge_mode='ave'" in str(raised.value)
    assert "RNN at '1': RNNCell" in str(raised.value)
    with pytest.raises(ValueError, match="LSTM at '<root>': LSTMCell with proj_size=2"):
        lstmkit.quantize_dynamic(lstmkit.LSTM(4, 8, proj_size=2))


def test_quantized_layers_are_torchs_and_refuse_lstmkit_keywords_loudly() -> None:
    quantized = lstmkit.quantize_dynamic(lstmkit.LSTM(4, 8))
    with pytest.raises(TypeError):
        quantized(torch.randn(5, 2, 4), lengths=[5, 3])


# torch's own quantize_dynamic -----------------------------------------------------------------------


def test_torchs_default_call_warns_that_it_left_lstmkit_layers_in_float() -> None:
    model = Tagger()
    with pytest.warns(QuantizationSkippedWarning) as caught:
        quantized = tq.quantize_dynamic(model)
    messages = [str(w.message) for w in caught if w.category is QuantizationSkippedWarning]
    assert len(messages) == 1
    assert "left lstmkit LSTM(6, 16, num_layers=2" in messages[0] and "in float" in messages[0]
    assert "lstmkit.quantize_dynamic(model)" in messages[0]
    assert "mapping=lstmkit.quantization.dynamic_quant_mappings()" in messages[0]
    assert isinstance(quantized.rnn, lstmkit.LSTM) and isinstance(quantized.head, nnqd.Linear)  # what torch did
    assert not hasattr(quantized.rnn, "qconfig")  # torch's clean-up went through


def test_torch_warns_for_standalone_cells_and_for_a_spec_without_the_mapping() -> None:
    with pytest.warns(QuantizationSkippedWarning, match=r"left lstmkit LSTMCell\(4, 8\) in float.*not cells"):
        tq.quantize_dynamic(nn.Sequential(lstmkit.LSTMCell(4, 8)))
    with pytest.warns(QuantizationSkippedWarning, match="it had a qconfig, but torch swaps only submodules"):
        tq.quantize_dynamic(Tagger(), {lstmkit.LSTM, nn.Linear})
    with pytest.warns(QuantizationSkippedWarning, match=r"left lstmkit GRU\(4, 8\) in float: it had a qconfig"):
        tq.quantize_dynamic(lstmkit.GRU(4, 8), {lstmkit.GRU}, mapping=dynamic_quant_mappings())  # the root


def test_torchs_quantize_dynamic_swaps_lstmkit_layers_with_the_mapping() -> None:
    model = Tagger().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationSkippedWarning)
        quantized = tq.quantize_dynamic(model, {lstmkit.LSTM, nn.Linear}, mapping=dynamic_quant_mappings())
    assert isinstance(quantized.rnn, nnqd.LSTM) and isinstance(quantized.head, nnqd.Linear)
    ids = torch.randint(0, 20, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), lstmkit.quantize_dynamic(model)(ids), rtol=0, atol=1e-6)
    half = tq.quantize_dynamic(
        nn.Sequential(lstmkit.GRU(4, 8)), {lstmkit.GRU}, dtype=torch.float16, mapping=dynamic_quant_mappings()
    )
    assert isinstance(half[0], nnqd.GRU) and half[0].dtype == torch.float16


def test_torchs_quantize_dynamic_with_the_mapping_refuses_unsupported_layers() -> None:
    model = nn.Sequential(lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 4, 8))
    with pytest.raises(ValueError, match=r"lstmkit Recurrent\(PeepholeLSTMCell, 4, 8\) cannot be dynamically"):
        tq.quantize_dynamic(model, {lstmkit.Recurrent}, mapping=dynamic_quant_mappings())
    with pytest.raises(ValueError, match="no dynamically quantized RNN layer"):
        tq.quantize_dynamic(nn.Sequential(lstmkit.RNN(4, 8)), {lstmkit.RNN}, mapping=dynamic_quant_mappings())


def test_dynamic_quant_mappings_extends_a_copy_of_torchs_defaults() -> None:
    defaults = tq.get_default_dynamic_quant_module_mappings()
    before = dict(defaults)
    mapping = dynamic_quant_mappings()
    assert mapping is not defaults and dict(defaults) == before  # torch's global default is left alone
    assert {key: mapping[key] for key in defaults} == defaults
    assert set(mapping) - set(defaults) == {lstmkit.LSTM, lstmkit.GRU, lstmkit.RNN, lstmkit.Recurrent}


def test_static_quantization_gives_lstmkit_layers_no_observer() -> None:
    class Static(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = lstmkit.GRU(4, 8)
            self.quant, self.head, self.dequant = tq.QuantStub(), nn.Linear(8, 2), tq.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.head(self.quant(self.rnn(x)[0])))

    model = Static().eval()
    model.qconfig = tq.default_qconfig
    prepared = tq.prepare(model)
    assert not hasattr(prepared.rnn, "activation_post_process")
    prepared(torch.randn(5, 2, 4))  # calibration runs through the float layer
    with pytest.warns(QuantizationSkippedWarning, match=r"left lstmkit GRU\(4, 8\) in float"):
        converted = tq.convert(prepared)
    assert converted(torch.randn(5, 2, 4)).shape == (5, 2, 2)


def test_qconfig_is_an_ordinary_attribute_otherwise() -> None:
    layer = lstmkit.LSTM(3, 4)
    assert not hasattr(layer, "qconfig")
    with pytest.raises(AttributeError):
        del layer.qconfig
    layer.qconfig = tq.default_dynamic_qconfig
    assert layer.qconfig is tq.default_dynamic_qconfig
    assert copy.deepcopy(layer).qconfig is not None
    with pytest.warns(QuantizationSkippedWarning):
        del layer.qconfig
    assert not hasattr(layer, "qconfig")
