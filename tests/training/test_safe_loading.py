"""Safe loading: what lstmkit reads from disk (checkpoints, pretrained folders, Keras files) is data,
never code. Fields of the wrong name or type fail with an error that names the field and the file,
and no loading path unpickles: the source uses no pickle-based loader at all, and the loaders run
with pickle and torch.load made to explode."""

from __future__ import annotations

import ast
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import lstmkit
from lstmkit.cli import app
from lstmkit.tasks import load_model
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig
from lstmkit.tasks.classify.model import ClassifyConfig, SequenceClassifier
from lstmkit.training import CheckpointError, TrainConfig, Trainer, read_checkpoint
from lstmkit.training.checkpoint import CHECKPOINT_FORMAT

SOURCE = Path(lstmkit.__file__).resolve().parent
runner = CliRunner()


def charlm_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "charlm"
    CharLM(CharLMConfig("abc", hidden_size=4, embedding_size=2)).save_pretrained(folder)
    return folder


def edit_config(folder: Path, **changes: object) -> None:
    document = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            document["config"].pop(key)
        else:
            document["config"][key] = value
    (folder / "config.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hidden_sizee": 4}, r"unknown CharLMConfig fields \['hidden_sizee'\]"),
        ({"hidden_size": "big"}, r"hidden_size: expected an integer, got 'big'"),
        ({"hidden_size": 4.5}, r"hidden_size: expected an integer, got 4.5"),
        ({"hidden_size": True}, r"hidden_size: expected an integer, got True"),
        ({"hidden_size": None}, r"hidden_size: expected an integer, got None"),
        ({"num_layers": [1]}, r"num_layers: expected an integer, got \[1\]"),
        ({"dropout": "lots"}, r"dropout: expected a number, got 'lots'"),
        ({"characters": 7}, r"characters: expected a string, got 7"),
        ({"characters": ...}, r"missing 1 required positional argument: 'characters'"),
        ({"cell": "transformer"}, r"unknown cell 'transformer'"),
        ({"__class__": "os.system"}, r"unknown CharLMConfig fields \['__class__'\]"),
    ],
)
def test_a_wrong_config_field_is_named_with_the_file(tmp_path: Path, changes: dict, message: str) -> None:
    folder = charlm_folder(tmp_path)
    edit_config(folder, **changes)
    for load in (CharLM.from_pretrained, load_model):
        with pytest.raises(CheckpointError, match=rf"{folder / 'config.json'}: charlm config: .*{message}"):
            load(folder)


def test_a_wrong_classifier_config_field_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "classify"
    SequenceClassifier(ClassifyConfig(["a", "b"], ["x"], [0.0], [1.0], hidden_size=4)).save_pretrained(folder)
    edit_config(folder, mean=["zero"])
    with pytest.raises(CheckpointError, match=r"mean: expected a number, got 'zero'"):
        load_model(folder)
    edit_config(folder, mean=[0.0], bidirectional="sometimes")
    with pytest.raises(CheckpointError, match=r"bidirectional: expected true or false, got 'sometimes'"):
        load_model(folder)


def test_a_broken_config_document_says_what_is_wrong(tmp_path: Path) -> None:
    folder = charlm_folder(tmp_path)
    good = (folder / "config.json").read_text()
    cases = [
        ("[1, 2]", "not an lstmkit config"),
        ('{"format": "lstmkit-pretrained/1", "task": "charlm", "config": [1]}', "'config' must be an object"),
        ('{"format": "pickle", "task": "charlm", "config": {}}', "not an lstmkit config"),
        ('{"format": "lstmkit-pretrained/1", "task": "nope", "config": {}}', "names a task outside"),
        (good[: len(good) // 2], "not valid JSON"),
    ]
    for text, message in cases:
        (folder / "config.json").write_text(text)
        with pytest.raises(CheckpointError, match=message):
            load_model(folder)
    (folder / "config.json").write_text(good)
    save_file({"embedding.weight": torch.zeros(4, 2)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensors .*'head.bias'"):
        load_model(folder)


def test_the_command_line_reports_a_bad_field_in_one_line(tmp_path: Path) -> None:
    folder = charlm_folder(tmp_path)
    edit_config(folder, hidden_size="big")
    result = runner.invoke(app, ["charlm", "generate", "--checkpoint", str(folder), "--length", "3"])
    assert result.exit_code == 2
    assert "hidden_size: expected an integer, got 'big'" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def tiny_trainer(out: Path, config: TrainConfig | None = None) -> Trainer:
    torch.manual_seed(0)
    data = [(torch.randn(3), torch.randn(1)) for _ in range(16)]

    def loss(model: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
        x, y = batch
        return ((model(x) - y) ** 2).sum(), len(y)

    def collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    config = config or TrainConfig(epochs=1, batch_size=8, progress=False)
    return Trainer(torch.nn.Linear(3, 1), config, train_set=data, collate=collate, loss=loss, out_dir=out, task="tiny")


def rewrite_checkpoint(path: Path, **metadata: str) -> None:
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        saved = dict(handle.metadata())
    save_file(load_file(path), path, metadata=saved | metadata)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("trainer_state", {"optimizer": 1}, r"trainer_state: unknown fields \['optimizer'\]"),
        ("trainer_state", {"step": "ten"}, r"trainer_state field 'step' must be int, got 'ten'"),
        ("trainer_state", {"step": True}, r"trainer_state field 'step' must be int, got True"),
        ("trainer_state", {"best_metric": [0.1]}, r"trainer_state field 'best_metric' must be float or None"),
        ("trainer_state", None, r"metadata 'trainer_state' must be a JSON object, got null"),
        ("train_config", [1], r"metadata 'train_config' must be a JSON object, got \[1\]"),
        ("optimizer", "adam", r"metadata 'optimizer' must be a JSON object"),
    ],
)
def test_a_checkpoint_with_wrong_fields_is_refused(tmp_path: Path, field: str, value: object, message: str) -> None:
    tiny_trainer(tmp_path).fit()
    path = tmp_path / "checkpoint.safetensors"
    saved = read_checkpoint(path)
    key = {"optimizer": "optimizer_layout"}.get(field, field)
    document = saved[key] | value if isinstance(value, dict) else value
    rewrite_checkpoint(path, **{field: json.dumps(document)})
    with pytest.raises(CheckpointError, match=message):
        tiny_trainer(tmp_path).fit(resume=True)


def test_a_checkpoint_of_another_format_or_with_bad_json_is_refused(tmp_path: Path) -> None:
    tiny_trainer(tmp_path).fit()
    path = tmp_path / "checkpoint.safetensors"
    rewrite_checkpoint(path, model_config="{not json")
    with pytest.raises(CheckpointError, match="metadata 'model_config' is not valid JSON"):
        read_checkpoint(path)
    rewrite_checkpoint(path, format="torch-pickle/1")
    with pytest.raises(CheckpointError, match=f"format 'torch-pickle/1', expected '{CHECKPOINT_FORMAT}'"):
        read_checkpoint(path)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(3, 1).state_dict()}, pickled)  # what torch.save writes: a pickle
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint(pickled)


# -- no pickle anywhere --------------------------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
FORBIDDEN_CALLS = {
    ("torch", "load"),
    ("torch.jit", "load"),
    ("torch.hub", "load"),
    ("torch.package", "PackageImporter"),
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def unsafe_uses(path: Path, root: Path = SOURCE.parent) -> list[str]:
    """Pickle-based loading in one source file: pickle-like imports, torch.load & co, numpy loads
    that allow pickles, builtin eval/exec."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            names += [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else []
            found += [f"{where} imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            owner, _, attribute = name.rpartition(".")
            if (owner, attribute) in FORBIDDEN_CALLS:
                found.append(f"{where} calls {name}")
            if attribute == "load" and owner in ("np", "numpy"):
                keywords = {k.arg: k.value for k in node.keywords}
                allow = keywords.get("allow_pickle")
                if allow is None or not (isinstance(allow, ast.Constant) and allow.value is False):
                    found.append(f"{where} calls {name} without allow_pickle=False")
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "__import__"):
                found.append(f"{where} calls {node.func.id}")
    return found


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nfrom joblib import load\nimport numpy as np\nimport torch\n"
        "torch.load('x')\nnp.load('y')\nnp.load('z', allow_pickle=False)\neval('1')\nmodel.eval()\n"
    )
    found = unsafe_uses(sample, tmp_path)
    assert [f.split(" ", 1)[1] for f in found] == [
        "imports pickle", "imports joblib", "imports joblib.load", "calls torch.load",
        "calls np.load without allow_pickle=False", "calls eval",
    ]  # fmt: skip


def test_no_source_file_loads_with_pickle() -> None:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 20
    found = [use for path in files for use in unsafe_uses(path)]
    assert found == [], "pickle-based loading in lstmkit:\n" + "\n".join(found)


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch):
    """Every unpickling entry point raises: a loader that reached one would fail the test."""

    def explode(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, explode)
    monkeypatch.setattr(torch, "load", explode)


def test_loaders_run_without_pickle(tmp_path: Path, no_pickle: None) -> None:
    folder = charlm_folder(tmp_path)
    assert isinstance(load_model(folder), CharLM)
    tiny_trainer(tmp_path / "run").fit()
    read_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    tiny_trainer(tmp_path / "run", TrainConfig(epochs=2, batch_size=8, progress=False)).fit(resume=True)


def test_keras_files_with_code_are_refused_without_running_it(tmp_path: Path, no_pickle: None) -> None:
    """A Keras Lambda layer carries marshalled Python bytecode; reading one would run it. The loader
    refuses the layer by its type before looking at its function."""
    pytest.importorskip("h5py")
    from lstmkit.keras import KerasFileError, load_keras_file

    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}},
        {"class_name": "Lambda", "config": {"name": "evil", "function": {"class_name": "__lambda__",
         "config": {"code": "4wEAAAAAAAAA", "defaults": None, "closure": None}}}},
    ]}}  # fmt: skip
    path = tmp_path / "lambda.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(KerasFileError, match=r"unsupported Keras layer type 'Lambda' \(layer 'evil'\)"):
        load_keras_file(path)
