"""Hostile input to every ``lstmkit`` command (issue 7, reliability 3).

Each command that reads a data file gets, in its place, a missing path, a directory, an empty file,
a blank one, a binary one, a Latin-1 one, a single line of 10 MB and one of rich markup. Each command
that reads a trained model gets broken model folders; each that writes gets a file where its output
folder goes; all get bad option values. Every refusal must be exit code 2 and a single line on
stderr, ``error: <path>: <what was expected>``; a bad option value gets click's usage message
naming the option, in one line too; nothing may end in a traceback. A sweep checks that every command of the
``lstmkit`` app is exercised here.

``tests/hostile_counts.py`` counts the cases.
"""

from __future__ import annotations

import ast
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import typer
from typer.testing import CliRunner, Result

from lstmkit.cli import app
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig
from lstmkit.tasks.classify.model import ClassifyConfig, SequenceClassifier
from lstmkit.tasks.forecast.model import ForecastConfig, Forecaster
from lstmkit.tasks.pairs.model import PairClassifier, PairsConfig

runner = CliRunner()
HUGE = 10_000_000  # bytes in the one-line file


def refused(result: Result, *named: object) -> str:
    """Check that the command refused its input cleanly; returns its one error line."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        details = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"the command raised instead of refusing:\n{details}\n{result.output[-2000:]}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for name in named:
        assert str(name) in lines[0], (str(name), lines[0][:2000])
    return lines[0]


@pytest.fixture(scope="module")
def given(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Small valid inputs and a saved (untrained) model of each task."""
    root = tmp_path_factory.mktemp("given")
    torch.manual_seed(0)
    corpus = root / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 6)
    quora = root / "pairs.tsv"
    rows = [f"{i}\thow do I {i}\thow do i {i + i % 2}\t{1 - i % 2}\n" for i in range(60)]
    quora.write_text("id\tquestion1\tquestion2\tis_duplicate\n" + "".join(rows))
    sequences = root / "sequences.csv"
    sequences.write_text("sequence_id,step,label,f\n" + "".join(f"s{i},{t},{'ab'[i % 2]},{i + t / 10}\n"
                                                                  for i in range(40) for t in range(3)))  # fmt: skip
    series = root / "series.csv"
    series.write_text("y\n" + "".join(f"{(i * 7) % 11 + i / 10}\n" for i in range(60)))
    models = {
        "charlm": CharLM(CharLMConfig("Tabeo, ", hidden_size=4, embedding_size=3)),
        "pairs": PairClassifier(PairsConfig(["how", "do", "i"], hidden_sizes=[4], embedding_size=3, dense_size=4)),
        "classify": SequenceClassifier(ClassifyConfig(["a", "b"], ["f"], [0.0], [1.0], hidden_size=4)),
        "forecast": Forecaster(ForecastConfig(["y"], [5.0], [3.0], window=3, horizon=2, hidden_size=4)),
    }
    folders = {task: model.save_pretrained(root / task) for task, model in models.items()}
    return SimpleNamespace(root=root, corpus=corpus, quora=quora, sequences=sequences, series=series, **folders)


# -- data files --------------------------------------------------------------------------------------

HOSTILE_FILES: dict[str, bytes | None] = {
    "missing": None,
    "directory": None,
    "empty": b"",
    "blank": b" \n\t\n",
    "binary": bytes(range(256)) * 8,
    "latin-1": "caf\xe9,cr\xe8me\n1,2\n".encode("latin-1"),
    "10 MB line": b"x" * HUGE,
    "markup": b"[/]\n[bold red]x[/]\n",
}


def hostile_file(folder: Path, kind: str, suffix: str) -> Path:
    path = folder / f"{kind.replace(' ', '-')}{suffix}"
    if kind == "directory":
        path.mkdir()
    elif HOSTILE_FILES[kind] is not None:
        path.write_bytes(HOSTILE_FILES[kind])  # type: ignore[arg-type]
    return path


# command -> (suffix of the file, its arguments given the file, the outputs folder and the given inputs)
FILE_COMMANDS: dict[str, tuple[str, Callable[[str, Path, SimpleNamespace], list[str]]]] = {
    "charlm train --corpus": (".txt", lambda f, out, g: ["charlm", "train", "--preset", "sentence", "--corpus", f,
                                                         "--out", str(out), "--quiet", "--max-steps", "1",
                                                         "--sample", "0"]),
    "charlm evaluate --corpus": (".txt", lambda f, out, g: ["charlm", "evaluate", "-c", str(g.charlm),
                                                            "--corpus", f]),
    "pairs train --data": (".tsv", lambda f, out, g: ["pairs", "train", "--data", f, "--out", str(out), "--quiet",
                                                      "--max-steps", "1"]),
    "pairs evaluate --data": (".tsv", lambda f, out, g: ["pairs", "evaluate", "-c", str(g.pairs), "--data", f]),
    "classify train --data": (".csv", lambda f, out, g: ["classify", "train", "--data", f, "--out", str(out),
                                                         "--quiet", "--max-steps", "1"]),
    "classify train --test": (".csv", lambda f, out, g: ["classify", "train", "--data", str(g.sequences), "--test",
                                                         f, "--out", str(out), "--quiet", "--max-steps", "1"]),
    "classify evaluate --data": (".csv", lambda f, out, g: ["classify", "evaluate", "-c", str(g.classify),
                                                            "--data", f]),
    "classify predict": (".csv", lambda f, out, g: ["classify", "predict", f, "-c", str(g.classify)]),
    "forecast train --csv": (".csv", lambda f, out, g: ["forecast", "train", "--csv", f, "--column", "y",
                                                        "--window", "3", "--horizon", "2", "--out", str(out),
                                                        "--quiet", "--max-steps", "1"]),
    "forecast evaluate --csv": (".csv", lambda f, out, g: ["forecast", "evaluate", "-c", str(g.forecast),
                                                           "--csv", f]),
    "forecast predict --csv": (".csv", lambda f, out, g: ["forecast", "predict", "-c", str(g.forecast),
                                                          "--csv", f]),
    "inspect gates --series": (".csv", lambda f, out, g: ["inspect", "gates", "-c", str(g.classify), "--series", f,
                                                          "--out", str(out)]),
    "export onnx (a .keras file)": (".keras", lambda f, out, g: ["export", "onnx", f, str(out / "model.onnx")]),
}  # fmt: skip
# What a character model reads is text: a long line or brackets are data, not errors.
GOOD_TEXT = {("charlm train --corpus", "10 MB line"), ("charlm train --corpus", "markup"),
             ("charlm evaluate --corpus", "10 MB line"), ("charlm evaluate --corpus", "markup")}  # fmt: skip
FILE_CASES = [(command, kind) for command in FILE_COMMANDS for kind in HOSTILE_FILES
              if (command, kind) not in GOOD_TEXT or command.startswith("charlm evaluate")]  # fmt: skip


@pytest.mark.parametrize(("command", "kind"), FILE_CASES, ids=[f"{c}: {k}" for c, k in FILE_CASES])
def test_every_command_refuses_a_hostile_data_file_by_name(
    command: str, kind: str, given: SimpleNamespace, tmp_path: Path
) -> None:
    suffix, arguments = FILE_COMMANDS[command]
    path = hostile_file(tmp_path, kind, suffix)
    result = runner.invoke(app, arguments(str(path), tmp_path / "out", given))
    if (command, kind) in GOOD_TEXT:  # charlm evaluate: bits per character of that text
        assert result.exit_code == 0, result.output[-2000:]
        assert "bits per character" in result.output
        return
    refused(result, path)


# -- trained model folders -----------------------------------------------------------------------------

HOSTILE_MODELS = ("missing", "empty folder", "a file", "config empty", "config binary", "config is a folder",
                  "config 10 MB line", "config of markup", "config of another task", "weights missing",
                  "weights empty", "weights binary", "weights a folder", "weights cut short",
                  "weights of another model")  # fmt: skip


def hostile_model(folder: Path, kind: str, good: Path) -> tuple[Path, Path]:
    """A broken copy of the model folder ``good`` at ``folder``, and the path its error must name."""
    if kind == "missing":
        return folder, folder
    folder.mkdir()
    config, weights = (good / "config.json").read_bytes(), (good / "model.safetensors").read_bytes()
    document = json.loads(config)
    other = (good.parent / ("pairs" if good.name != "pairs" else "charlm") / "model.safetensors").read_bytes()
    files: dict[str, bytes | None] = {
        "empty folder": {},
        "a file": {"model.bin": bytes(range(256))},
        "config empty": {"config.json": b"", "model.safetensors": weights},
        "config binary": {"config.json": bytes(range(256)), "model.safetensors": weights},
        "config is a folder": {"config.json": None, "model.safetensors": weights},
        "config 10 MB line": {"config.json": b" " * HUGE + b"{", "model.safetensors": weights},
        "config of markup": {"config.json": json.dumps(document | {"task": "[/]"}).encode()},
        "config of another task": {"config.json": json.dumps(document | {"task": "[bold]pairs"}).encode()},
        "weights missing": {"config.json": config},
        "weights empty": {"config.json": config, "model.safetensors": b""},
        "weights binary": {"config.json": config, "model.safetensors": bytes(range(256)) * 4},
        "weights a folder": {"config.json": config, "model.safetensors": None},
        "weights cut short": {"config.json": config, "model.safetensors": weights[: len(weights) // 2]},
        "weights of another model": {"config.json": config, "model.safetensors": other},
    }[kind]  # type: ignore[assignment]
    for name, content in files.items():  # type: ignore[union-attr]
        if content is None:
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes(content)
    if kind == "a file":
        return folder / "model.bin", folder
    return folder, folder


# command -> (the task of the model it reads, its arguments given the model folder)
MODEL_COMMANDS: dict[str, tuple[str, Callable[[str, Path, SimpleNamespace], list[str]]]] = {
    "charlm generate": ("charlm", lambda m, out, g: ["charlm", "generate", "-c", m, "--length", "3"]),
    "charlm evaluate": ("charlm", lambda m, out, g: ["charlm", "evaluate", "-c", m, "--corpus", str(g.corpus)]),
    "charlm predict": ("charlm", lambda m, out, g: ["charlm", "predict", "To be", "-c", m]),
    "pairs evaluate": ("pairs", lambda m, out, g: ["pairs", "evaluate", "-c", m, "--data", str(g.quora)]),
    "pairs predict": ("pairs", lambda m, out, g: ["pairs", "predict", "how do", "do i", "-c", m]),
    "classify evaluate": ("classify", lambda m, out, g: ["classify", "evaluate", "-c", m, "--data",
                                                         str(g.sequences)]),
    "classify predict": ("classify", lambda m, out, g: ["classify", "predict", str(g.sequences), "-c", m]),
    "forecast evaluate": ("forecast", lambda m, out, g: ["forecast", "evaluate", "-c", m, "--csv", str(g.series)]),
    "forecast predict": ("forecast", lambda m, out, g: ["forecast", "predict", "-c", m, "--csv", str(g.series)]),
    "inspect gates": ("classify", lambda m, out, g: ["inspect", "gates", "-c", m, "--values", "1,2",
                                                     "--out", str(out)]),
    "inspect report": ("charlm", lambda m, out, g: ["inspect", "report", "-c", m, "--quick", "--out", str(out)]),
    "export onnx": ("charlm", lambda m, out, g: ["export", "onnx", m, str(out / "model.onnx")]),
}  # fmt: skip
MODEL_CASES = [(command, kind) for command in MODEL_COMMANDS for kind in HOSTILE_MODELS]


@pytest.mark.parametrize(("command", "kind"), MODEL_CASES, ids=[f"{c}: {k}" for c, k in MODEL_CASES])
def test_every_command_refuses_a_broken_model_folder_by_name(
    command: str, kind: str, given: SimpleNamespace, tmp_path: Path
) -> None:
    task, arguments = MODEL_COMMANDS[command]
    path, named = hostile_model(tmp_path / "model", kind, getattr(given, task))
    refused(runner.invoke(app, arguments(str(path), tmp_path / "out", given)), named)


# -- outputs that cannot be written ----------------------------------------------------------------------

# command -> its arguments given a path where its output folder (or file) goes
OUTPUT_COMMANDS: dict[str, Callable[[str, SimpleNamespace], list[str]]] = {
    "charlm train": lambda o, g: ["charlm", "train", "--preset", "sentence", "--corpus", str(g.corpus), "--out", o,
                                  "--quiet", "--max-steps", "1", "--sample", "0"],
    "pairs train": lambda o, g: ["pairs", "train", "--data", str(g.quora), "--out", o, "--quiet", "--max-steps", "1"],
    "classify train": lambda o, g: ["classify", "train", "--data", str(g.sequences), "--out", o, "--quiet",
                                    "--max-steps", "1"],
    "forecast train": lambda o, g: ["forecast", "train", "--csv", str(g.series), "--window", "3", "--horizon", "2",
                                    "--out", o, "--quiet", "--max-steps", "1"],
    "classify evaluate --plot": lambda o, g: ["classify", "evaluate", "-c", str(g.classify), "--data",
                                              str(g.sequences), "--plot", f"{o}/confusion.png"],
    "forecast evaluate --plot": lambda o, g: ["forecast", "evaluate", "-c", str(g.forecast), "--csv", str(g.series),
                                              "--plot", f"{o}/forecast.png"],
    "inspect gates": lambda o, g: ["inspect", "gates", "-c", str(g.classify), "--values", "1,2", "--out", o],
    "inspect cost": lambda o, g: ["inspect", "cost", "--kinds", "rnn", "--input-size", "2", "--hidden-size", "2",
                                  "--steps", "2", "--batch-size", "1", "--repeats", "1", "--out", o],
    "inspect gradients": lambda o, g: ["inspect", "gradients", "--lag", "3", "--kinds", "rnn", "--steps", "1",
                                       "--hidden-size", "2", "--out", o],
    "inspect long-lag": lambda o, g: ["inspect", "long-lag", "--tasks", "adding", "--lags", "3", "--kinds", "rnn",
                                      "--steps", "1", "--hidden-size", "2", "--out", o],
    "inspect report": lambda o, g: ["inspect", "report", "-c", str(g.charlm), "--quick", "--out", o],
    "export onnx": lambda o, g: ["export", "onnx", str(g.charlm), f"{o}/model.onnx", "--no-verify"],
    "bench": lambda o, g: ["bench", "--quick", "--out-dir", f"{o}/results"],
}  # fmt: skip


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_every_command_refuses_a_file_where_its_output_goes(
    command: str, given: SimpleNamespace, tmp_path: Path
) -> None:
    """A plain file stands where the output folder must be: a clear error, before any long work."""
    blocker = tmp_path / "taken.txt"
    blocker.write_text("a file, not a folder\n")
    result = runner.invoke(app, OUTPUT_COMMANDS[command](str(blocker), given))
    if command == "bench":  # click's usage error: refused before the benchmark runs
        assert result.exit_code == 2 and "--out-dir" in result.output and "Traceback" not in result.output
        return
    refused(result, blocker)
    assert blocker.read_text() == "a file, not a folder\n"


# -- option values and inline inputs --------------------------------------------------------------------

# bad values click refuses: (arguments, the option or the expectation its message names)
BAD_OPTIONS = [
    (["charlm", "train", "--max-steps", "0"], "--max-steps"),
    (["charlm", "train", "--epochs", "-3"], "--epochs"),
    (["charlm", "train", "--seed", "abc"], "--seed"),
    (["charlm", "train", "--nproc", "65"], "--nproc"),
    (["charlm", "train", "--bogus"], "--bogus"),
    (["charlm", "generate", "--length", "-1"], "--length"),
    (["charlm", "generate", "--temperature", "0"], "--temperature"),
    (["charlm", "generate", "--temperature", "nan"], "--temperature"),
    (["charlm", "generate", "--top-k", "0"], "--top-k"),
    (["charlm", "predict", "To be", "--top-k", "0"], "--top-k"),
    (["charlm", "predict"], "Missing argument 'prompt'"),
    (["pairs", "evaluate", "--threshold", "1.5"], "--threshold"),
    (["pairs", "predict", "only one"], "Missing argument 'second'"),
    (["classify", "train", "--nproc", "0"], "--nproc"),
    (["classify", "predict"], "Missing argument 'sequences'"),
    (["forecast", "train", "--horizon", "0"], "--horizon"),
    (["forecast", "train", "--window", "-1"], "--window"),
    (["forecast", "train", "--season", "0"], "--season"),
    (["forecast", "train", "--threads", "-1"], "--threads"),
    (["export", "onnx", "model", "out.onnx", "--batch", "0"], "--batch"),
    (["export", "onnx", "model", "out.onnx", "--steps", "0"], "--steps"),
    (["export", "onnx", "model", "out.onnx", "--opset", "3"], "--opset"),
    (["export", "onnx", "model"], "Missing argument 'out'"),
    (["inspect", "gates", "--count", "0"], "--count"),
    (["inspect", "gradients", "--lag", "1"], "--lag"),
    (["inspect", "long-lag", "--lr", "0"], "--lr"),
    (["inspect", "cost", "--repeats", "0"], "--repeats"),
    (["inspect", "report", "--threads", "-1"], "--threads"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--shapes", "0x1x1x1"], "a shape is T x B x I x H of positive ints"),
    (["bench", "--shapes", "big"], "a shape is T x B x I x H of positive ints"),
    (["bench", "--only", "nope"], "unknown implementation 'nope'"),
    (["example", "hihello", "--epochs", "0"], "--epochs"),
    (["example", "lstm-outputs", "extra"], "extra"),
    (["example", "all", "--fast"], "--fast"),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "option"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_values_get_a_usage_error_naming_the_option(arguments: list[str], option: str) -> None:
    refused(runner.invoke(app, arguments), option)


# bad values the commands refuse themselves: (arguments, words of the one error line)
BAD_SETTINGS = [
    (["charlm", "train", "--set", "noequals"], "--set 'noequals': unknown setting 'noequals'; known settings: "),
    (["charlm", "train", "--set", "=3"], "--set '=3': unknown setting ''; known settings: "),
    (["charlm", "train", "--set", "lr=nan"], "lr: expected a finite number, got 'nan'"),
    (["charlm", "train", "--set", "lr=1e38"], "need 0 < lr <= 1e+06"),
    (["charlm", "train", "--set", "num_layers=1000000000"], "num_layers must be at most 1024, got 1000000000"),
    (["forecast", "train", "--set", "hidden_size=1000000000"], "would have about 4.0e+18 weights"),
    (["charlm", "train", "--set", "embedding_size=1000000000"], "x 1000000000 would have about"),
    (["charlm", "train", "--set", "weight_decay=inf"], "weight_decay: expected a finite number, got 'inf'"),
    (["charlm", "train", "--set", "min_lr_ratio=2"], "min_lr_ratio must be a number in [0, 1], got 2.0"),
    (["charlm", "train", "--set", "seq_len=0"], "seq_len and stride must be positive"),
    (["charlm", "train", "--set", "hidden_size=[3]"], "hidden_size: expected an integer, got [3]"),
    (["charlm", "train", "--set", "hidden_size=-2", "--corpus", "{corpus}"], "must be positive"),
    (["pairs", "train", "--set", "hidden_sizes=4,x", "--data", "{quora}"], "hidden_sizes: expected an integer"),
    (["classify", "train", "--set", "dropout=nan", "--data", "{sequences}"], "expected a finite number, got 'nan'"),
    (["forecast", "train", "--set", "test_fraction=-inf"], "test_fraction: expected a finite number, got '-inf'"),
    (["inspect", "gates", "-c", "{classify}", "--values", "1,nan"], "the series contains NaN or infinite values"),
    (["inspect", "gates", "-c", "{classify}", "--values", "1,1e999"], "the series contains NaN or infinite values"),
    (["inspect", "gates", "-c", "{classify}", "--values", ",,"], "--values: expected a comma-separated list"),
    (["inspect", "gates", "-c", "{charlm}", "--text", ""], "the text is empty"),
    (["inspect", "gates", "-c", "{classify}", "--values", "1", "--units", "[/]"], "--units: expected comma-sep"),
    (["pairs", "predict", "   ", "[/]", "-c", "{pairs}"], "the first sentence '   ' has no words"),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "words"), BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_bad_settings_and_inline_inputs_are_one_clear_line(
    arguments: list[str], words: str, given: SimpleNamespace, tmp_path: Path
) -> None:
    arguments = [argument.format(**vars(given)) for argument in arguments]
    result = runner.invoke(app, [*arguments, *(["--out", str(tmp_path)] if "train" in arguments else [])])
    assert words in refused(result)


# -- unseen and unusual text at generation and prediction time --------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    ["ROMEO: [/]\n\u00bfQu\u00e9? \u65e5\u672c\U0001f600 \x00\ufffd", "", "\t" * 1500],
    ids=["unseen characters", "empty", "1,500 tabs"],
)
def test_generation_continues_any_prompt_and_names_unseen_characters(prompt: str, given: SimpleNamespace) -> None:
    result = runner.invoke(app, ["charlm", "generate", "-c", str(given.charlm), "--prompt", prompt, "--length", "40"])
    assert result.exit_code == 0, result.output[-2000:]
    vocabulary = set("Tabeo, ")
    if set(prompt) - vocabulary:
        assert "were never seen in training; the model reads them as unknown" in " ".join(result.stdout.split())
    start = result.stdout.index(prompt) + len(prompt)
    continuation = result.stdout[start:].removesuffix("\n")
    assert len(continuation) == 40 and set(continuation) <= vocabulary, repr(continuation)


def test_next_characters_after_unseen_ones(given: SimpleNamespace) -> None:
    result = runner.invoke(app, ["charlm", "predict", "[/]\x00\u65e5 be", "-c", str(given.charlm), "--top-k", "3"])
    assert result.exit_code == 0, result.output[-2000:]
    assert "were never seen in training" in " ".join(result.stdout.split())
    listed = [ast.literal_eval(line.rsplit(maxsplit=1)[0].strip()) for line in result.stdout.splitlines()
              if line.endswith("%")]  # fmt: skip
    assert len(listed) == 3 and set(listed) <= set("Tabeo, "), listed


def test_prediction_with_unseen_words_names_them(given: SimpleNamespace) -> None:
    result = runner.invoke(app, ["pairs", "predict", "how do I bake [/]", "do i \u00e9t\u00e9", "-c", str(given.pairs)])
    assert result.exit_code == 0, result.output[-2000:]
    flat = " ".join(result.stdout.split())
    assert "['bake', '[', '/', ']']" in flat and "['\u00e9t\u00e9']" in flat, flat
    assert result.stdout.splitlines()[-1].startswith("probability ")


# -- every command is exercised ---------------------------------------------------------------------------


def command_paths(command: object, prefix: str = "") -> list[str]:
    children = getattr(command, "commands", None)
    if not children:
        return [prefix.strip()]
    return [path for name, child in children.items() for path in command_paths(child, f"{prefix} {name}")]


def test_every_command_gets_hostile_input() -> None:
    every = set(command_paths(typer.main.get_command(app)))
    assert len(every) >= 20
    exercised = {" ".join(arguments[:2]) if arguments[0] not in ("bench",) else "bench"
                 for arguments, _ in BAD_OPTIONS + BAD_SETTINGS}  # fmt: skip
    for table in (FILE_COMMANDS, MODEL_COMMANDS, OUTPUT_COMMANDS):
        exercised |= {" ".join(name.split(" ")[:2]) if not name.startswith("bench") else "bench" for name in table}
    assert every <= exercised, f"commands without hostile input: {sorted(every - exercised)}"
