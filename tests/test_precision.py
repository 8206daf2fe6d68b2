"""Reduced precision: what the CPU offers (read from /proc/cpuinfo text), the precision a run resolves
to, the autocast context, losses in float32 under it, and the trainer's use of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from task_helpers import runner
from torch import nn

from lstmkit import precision
from lstmkit.cli import app
from lstmkit.precision import CpuPrecision, autocast_for, parse_cpu_flags, precision_from_flags, resolve_precision
from lstmkit.tasks import TASKS
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig
from lstmkit.tasks.charlm.model import cross_entropy_sum as charlm_loss
from lstmkit.tasks.classify.model import ClassifyConfig, SequenceClassifier
from lstmkit.tasks.classify.model import collate as classify_collate
from lstmkit.tasks.classify.model import cross_entropy_sum as classify_loss
from lstmkit.tasks.forecast.model import ForecastConfig, Forecaster, mse_sum
from lstmkit.tasks.pairs.model import PairClassifier, PairsConfig, bce_sum
from lstmkit.tasks.pairs.model import collate as pairs_collate
from lstmkit.training import TrainConfig, Trainer

# abridged /proc/cpuinfo of two processors of an Intel Sapphire Rapids machine (AMX)
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu
"""
ZEN4 = "processor : 0\nflags : fpu avx2 avx512f avx512_vnni avx512_bf16\n"
HASWELL = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n"
ALDER_LAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16\n"


@pytest.mark.parametrize(
    ("cpuinfo", "vector", "bf16", "description"),
    [
        (SAPPHIRE_RAPIDS, "AVX512", True, "AMX-BF16 + AVX512-BF16, int8: AMX-INT8 + AVX512-VNNI"),
        (ZEN4, "AVX512", True, "AVX512-BF16 (no AMX), int8: AVX512-VNNI"),
        (HASWELL, "AVX2", False, "no bf16 hardware (AVX2)"),
        (ALDER_LAKE, "AVX2", False, "no bf16 hardware (AVX2), int8: AVX-VNNI"),
        (ARM, "DEFAULT", False, "no bf16 hardware (DEFAULT)"),
    ],
    ids=["sapphire rapids", "zen4", "haswell", "alder lake", "arm"],
)
def test_the_cpu_is_described_from_its_cpuinfo_text(cpuinfo: str, vector: str, bf16: bool, description: str) -> None:
    cpu = precision_from_flags(parse_cpu_flags(cpuinfo), vector)
    assert cpu.bf16 is bf16
    assert cpu.description == description
    assert resolve_precision("auto", cpu) == ("bf16" if bf16 else "fp32")


def test_only_the_first_processors_flags_are_read() -> None:
    flags = parse_cpu_flags(SAPPHIRE_RAPIDS)
    assert {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"} <= flags and "spectre_v1" not in flags
    assert parse_cpu_flags("") == set() and parse_cpu_flags(ARM) == set()


def test_torch_capabilities_serve_where_there_is_no_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    capabilities = {"avx512_bf16": False, "amx_bf16": True, "amx_int8": True, "avx_vnni": False, "cpu_name": "x"}
    monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / "missing"))
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)
    precision.detect_cpu.cache_clear()
    try:
        cpu = precision.detect_cpu()
    finally:
        precision.detect_cpu.cache_clear()
    assert cpu == CpuPrecision(False, True, True, None, torch.backends.cpu.get_cpu_capability(), "torch")


def test_this_cpu_is_read_from_proc_cpuinfo() -> None:
    path = Path(precision.CPUINFO)
    if not path.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = parse_cpu_flags(path.read_text(errors="replace"))
    cpu = precision.detect_cpu()
    assert cpu.bf16 == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert cpu.amx_int8 == ("amx_int8" in flags)


@pytest.mark.parametrize("choice", ["bf16", "fp32"])
def test_explicit_precisions_are_kept_whatever_the_cpu(choice: str) -> None:
    for cpu in (precision_from_flags(parse_cpu_flags(text), "AVX2") for text in (ZEN4, HASWELL)):
        assert resolve_precision(choice, cpu) == choice


@pytest.mark.parametrize("choice", ["fp16", "BF16", "", "float32"])
def test_an_unknown_precision_names_the_allowed_ones_and_what_came(choice: str) -> None:
    with pytest.raises(ValueError, match=f"unknown precision {choice!r}: expected auto, bf16 or fp32"):
        resolve_precision(choice)
    with pytest.raises(ValueError, match=f"unknown precision {choice!r}"):
        TrainConfig(precision=choice)


def test_a_train_config_records_the_resolved_precision() -> None:
    assert TrainConfig().precision == "fp32"
    assert TrainConfig(precision="auto").precision == resolve_precision("auto") in ("bf16", "fp32")


def test_autocast_for_runs_matrix_products_in_bf16_or_leaves_them() -> None:
    linear = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast_for("bf16"):
        assert linear(x).dtype == torch.bfloat16
    with autocast_for("fp32"):
        assert not torch.is_autocast_enabled("cpu") and linear(x).dtype == torch.float32
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        autocast_for("auto")


def _toy_trainer(precision_choice: str, out: Path | None = None, epochs: int = 2) -> Trainer:
    torch.manual_seed(0)
    data = [(torch.randn(3), torch.randn(())) for _ in range(32)]
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    seen: list[torch.dtype] = []

    def loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
        x, y = batch
        prediction = model(x).squeeze(1)
        seen.append(prediction.dtype)
        return ((prediction.float() - y) ** 2).sum(), len(y)

    def collate(items: list) -> tuple:
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    config = TrainConfig(epochs=epochs, batch_size=8, progress=False, precision=precision_choice)
    trainer = Trainer(model, config, train_set=data, collate=collate, loss=loss, out_dir=out, task="toy")
    trainer.seen = seen  # type: ignore[attr-defined]
    return trainer


@pytest.mark.parametrize(("choice", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_trainer_runs_the_forward_pass_at_its_precision_on_float32_weights(choice: str, dtype: torch.dtype) -> None:
    trainer = _toy_trainer(choice)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert set(trainer.seen) == {dtype}  # type: ignore[attr-defined]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True))
    assert all(state["exp_avg"].dtype == torch.float32 for state in trainer.optimizer.state.values())


def test_the_trainer_refuses_to_train_under_a_callers_autocast() -> None:
    """Autocast's cache of bf16 weight copies lives as long as the outermost autocast: the steps would
    all see the first step's weights."""
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError, match="precision='bf16'"):
        _toy_trainer("fp32").fit()


def test_a_checkpoint_from_before_the_precision_resumes_as_fp32(tmp_path: Path) -> None:
    _toy_trainer("fp32", tmp_path, epochs=1).fit()
    path = tmp_path / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as file:
        metadata = file.metadata()
    config = metadata["train_config"].replace(', "precision": "fp32"', "")
    assert config != metadata["train_config"]
    save_file(load_file(str(path)), str(path), metadata=metadata | {"train_config": config})
    assert _toy_trainer("fp32", tmp_path, epochs=2).fit(resume=True).steps == 8
    with pytest.raises(ValueError, match="precision: 'fp32' -> 'bf16'"):
        _toy_trainer("bf16", tmp_path, epochs=2).fit(resume=True)


@pytest.mark.parametrize("task", TASKS)
def test_every_command_that_runs_a_model_takes_a_precision(task: str) -> None:
    commands = ["train", "evaluate", "generate" if task == "charlm" else "predict"]
    for command in commands:
        result = runner.invoke(app, [task, command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "--precision" in result.output, (command, result.output)


def _task_batches() -> list[tuple[nn.Module, object, object]]:
    """Each task's loss function, a tiny model of the task and a batch of it."""
    words = torch.tensor([3, 4, 5])
    return [
        (CharLM(CharLMConfig("abc", hidden_size=4, embedding_size=3)), charlm_loss, torch.randint(1, 4, (2, 6))),
        (PairClassifier(PairsConfig(["a", "b", "c"], hidden_sizes=[4], embedding_size=3, dense_size=4)), bce_sum,
         pairs_collate([(words, words[:2], 1), (words[1:], words, 0)])),
        (SequenceClassifier(ClassifyConfig(["a", "b"], ["f"], [0.0], [1.0], hidden_size=4)), classify_loss,
         classify_collate([(torch.randn(3, 1), 0), (torch.randn(2, 1), 1)])),
        (Forecaster(ForecastConfig(["y"], [0.0], [1.0], window=4, horizon=2, hidden_size=4, relative=False)), mse_sum,
         (torch.randn(3, 4, 1), torch.randn(3, 2))),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(4), ids=list(TASKS))
def test_every_tasks_loss_is_float32_under_bf16_autocast(index: int) -> None:
    model, loss, batch = _task_batches()[index]
    with autocast_for("bf16"):
        total, count = loss(model, batch)
    assert total.dtype == torch.float32 and count > 0
