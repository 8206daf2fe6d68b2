"""Fuzzing the loaders, and property tests of hostile data (issue 7, reliability 3).

Every loader that reads a user's file gets random bytes, and mutations of a valid file of its
format: bytes inserted, replaced or deleted (NUL, invalid UTF-8, a BOM, line and field separators,
quotes, NaN, a 200,000-character field, rich markup), lines duplicated or dropped, the file cut
short. It must either return data that keeps the loader's promises, or raise its documented error
(a ``ValueError`` subclass) with a message that starts with the file's path: any other exception
fails, and so does a hang (every test runs under an alarm). Then, with answers worked out
independently of the loaders: structured files with NaN and infinity in a series, labels outside
{0, 1}, wrong values and steps; zero-length sequences in a batch; sequences far longer than any seen
in training; characters never seen in training at generation time; and ``--set`` overrides.

``tests/hostile_counts.py`` counts the examples each test tries (from ``max_examples`` below).
"""

from __future__ import annotations

import csv
import io
import json
import math
import resource
import signal
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lstmkit.cell_kinds import CELL_KINDS, recurrent_layer
from lstmkit.inspect.cli import read_series
from lstmkit.tasks import TaskModel, load_model
from lstmkit.tasks.charlm.data import UNKNOWN, CorpusError, read_text_file
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig, generate
from lstmkit.tasks.classify.data import SequenceDataError, SequenceSet, read_sequence_csv, read_ts_file
from lstmkit.tasks.classify.model import ClassifyConfig, SequenceClassifier, predict_logits
from lstmkit.tasks.forecast.data import Series, SeriesDataError, read_csv_series
from lstmkit.tasks.forecast.model import ForecastConfig, Forecaster
from lstmkit.tasks.forecast.task import predict_next
from lstmkit.tasks.pairs.data import PairsDataError, PairSet, read_quora_tsv, tokenize
from lstmkit.tasks.pairs.model import PairClassifier, PairsConfig, predict_probabilities
from lstmkit.training import CheckpointError, TrainConfig, apply_overrides, read_checkpoint
from lstmkit.training.checkpoint import save_checkpoint

RANDOM_EXAMPLES = 60  # random bytes per loader
MUTATION_EXAMPLES = 150  # mutated valid files per loader
STRUCTURED_EXAMPLES = 100  # structured files with known problems per format
MODEL_EXAMPLES = 30  # model runs (zero-length, long sequences, unseen characters)
HANG_SECONDS = 300  # a test still running after this long hangs (the first one may build the native engine)
MEMORY_BYTES = 4 * 2**30  # the address space a test may add

COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}
RANDOM = settings(max_examples=RANDOM_EXAMPLES, **COMMON)
MUTATIONS = settings(max_examples=MUTATION_EXAMPLES, **COMMON)
STRUCTURED = settings(max_examples=STRUCTURED_EXAMPLES, **COMMON)
MODELS = settings(max_examples=MODEL_EXAMPLES, **COMMON)


class Hang(BaseException):
    """Raised by the alarm; a ``BaseException``, so that no loader's ``except`` swallows it."""


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """Each test may run ``HANG_SECONDS`` and grow its address space by ``MEMORY_BYTES``: a hang
    raises :class:`Hang`, a runaway allocation fails the test instead of waking the kernel's
    out-of-memory killer on a shared machine."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {HANG_SECONDS} s: a loader hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG_SECONDS)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    statm = Path("/proc/self/statm")
    if statm.exists():
        cap = int(statm.read_text().split()[0]) * resource.getpagesize() + MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (min(cap, limits[1]) if limits[1] >= 0 else cap, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _eager_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """No compiled steps (``LSTMKIT_COMPILE=auto`` compiles after 2,000 steps of one shape): the
    examples run many small one-off shapes, whose compiles would cost minutes and test nothing new."""
    monkeypatch.setenv("LSTMKIT_COMPILE", "0")


# -- mutations -------------------------------------------------------------------------------------

SNIPPETS = [
    b"\x00", b"\xff", b"\xe9", b"\xc3", b"\n", b"\r", b"\r\n", b"\n\n", b"\t", b",", b":", b";", b'"', b'""', b"'",
    b"nan", b"-inf", b"Infinity", b"1e999", b"-0", b"1_0", b" ", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"\x0c", b"\x85",
    b"@data", b"@classLabel true", b"[/]", b"[bold]", b"9" * 400, b"x" * 200_000,
]  # fmt: skip
EDITS = ("insert", "replace", "delete", "truncate", "duplicate line", "drop line")


def apply_edits(seed: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for kind, where, payload in edits:
        at = where % (len(data) + 1)
        if kind == "insert":
            data[at:at] = payload
        elif kind == "replace":
            data[at : at + len(payload)] = payload
        elif kind == "delete":
            del data[at : at + len(payload)]
        elif kind == "truncate":
            del data[at:]
        else:
            lines = bytes(data).split(b"\n")
            line = where % len(lines)
            lines[line:line] = [lines[line]] if kind == "duplicate line" else []
            if kind == "drop line":
                del lines[line]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` after one to six random edits."""
    payload = st.binary(min_size=1, max_size=8) | st.sampled_from(SNIPPETS)
    edit = st.tuples(st.sampled_from(EDITS), st.integers(0, 2**20), payload)
    return st.lists(edit, min_size=1, max_size=6).map(lambda edits: apply_edits(seed, edits))


# -- the loaders of text formats -----------------------------------------------------------------


def check_text(text: str, content: bytes) -> None:
    assert text == content.decode("utf-8-sig") and text.strip() and b"\x00" not in content


def check_pairs(pairs: PairSet, content: bytes) -> None:
    assert len(pairs) >= 1 and pairs.labels is not None
    assert len(pairs.first) == len(pairs.second) == len(pairs.labels) == len(pairs)
    assert set(pairs.labels) <= {0, 1}
    assert all(tokenize(sentence) for sentence in pairs.first + pairs.second)


def check_sequences(data: SequenceSet, content: bytes) -> None:
    assert len(data.sequences) >= 1 and len(set(data.ids)) == len(data.ids) == len(data.sequences)
    for sequence in data.sequences:
        assert sequence.dtype == torch.float32 and sequence.dim() == 2
        assert sequence.shape[0] >= 1 and sequence.shape[1] == len(data.features)
        assert bool(torch.isfinite(sequence).all())
    assert data.labels is None or (len(data.labels) == len(data.ids) and all(data.labels))


def check_series(series: Series, content: bytes) -> None:
    assert series.values.dtype == np.float64 and series.values.shape == (len(series), len(series.columns))
    assert len(series) >= 1 and np.isfinite(series.values).all()
    assert len(series.time) == len(series)
    assert all(later > earlier for earlier, later in zip(series.time, series.time[1:], strict=False))


def check_array(values: np.ndarray, content: bytes) -> None:
    assert values.dtype == np.float32 and values.ndim == 2 and values.shape[0] >= 1 and values.shape[1] >= 1


@dataclass(frozen=True)
class Loader:
    read: Callable[[Path], object]
    error: type[Exception]
    check: Callable[[object, bytes], None]
    seed: bytes
    suffix: str


CHARLM_SEED = b"ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n"
QUORA_SEED = (
    b"id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    b"0\t1\t2\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n"
    b'1\t3\t4\t"Is ""AI"" hype?\nReally?"\tWhy is the sky blue?\t0\n'
)
CLASSIFY_SEED = b"sequence_id,step,label,c1,c2\na,0,yes,0.5,1.25\nb,0,no,2.0,-1.5\na,1,yes,0.25,1.0\n"
TS_SEED = b"# toy\n@problemName toy\n@timeStamps false\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7:8:b\n"
FORECAST_SEED = b"date,load,temperature\n2024-01-01,512.5,3.5\n2024-01-02,498.0,2.25\n2024-01-04,505.0,1.0\n"
ONE_COLUMN_SEED = b"load\n512.5\n498\n\n505\n"
SERIES_SEED = b"x,y\n0.1,0.2\n0.3 0.4\n5e-3,-1\n"

LOADERS = {
    "charlm text": Loader(read_text_file, CorpusError, check_text, CHARLM_SEED, ".txt"),
    "pairs tsv": Loader(read_quora_tsv, PairsDataError, check_pairs, QUORA_SEED, ".tsv"),
    "pairs tsv, drop empty": Loader(
        lambda path: read_quora_tsv(path, drop_empty=True), PairsDataError, check_pairs, QUORA_SEED, ".tsv"
    ),
    "classify csv": Loader(read_sequence_csv, SequenceDataError, check_sequences, CLASSIFY_SEED, ".csv"),
    "classify csv, unlabelled": Loader(
        lambda path: read_sequence_csv(path, labelled=False, features=["c1", "c2"]),
        SequenceDataError,
        check_sequences,
        CLASSIFY_SEED,
        ".csv",
    ),  # fmt: skip
    "classify ts": Loader(read_ts_file, SequenceDataError, check_sequences, TS_SEED, ".ts"),
    "forecast csv": Loader(
        lambda path: read_csv_series(path, ["load", "temperature"], "date"),
        SeriesDataError,
        check_series,
        FORECAST_SEED,
        ".csv",
    ),  # fmt: skip
    "forecast csv, one column": Loader(read_csv_series, SeriesDataError, check_series, ONE_COLUMN_SEED, ".csv"),
    "inspect series": Loader(read_series, ValueError, check_array, SERIES_SEED, ".csv"),
}


def attempt(loader: Loader, content: bytes, folder: Path) -> object | None:
    """Read ``content`` with ``loader``: its result (checked) or ``None`` after its documented error."""
    path = folder / f"input{loader.suffix}"
    path.write_bytes(content)
    try:
        result = loader.read(path)
    except loader.error as error:
        assert str(error).startswith(str(path)), f"the error does not start with the file's path: {error}"
        return None
    loader.check(result, content)
    return result


@pytest.mark.parametrize("name", LOADERS)
@RANDOM
@given(content=st.binary(max_size=600))
def test_loaders_take_random_bytes(name: str, content: bytes, tmp_path: Path) -> None:
    attempt(LOADERS[name], content, tmp_path)


@pytest.mark.parametrize("name", LOADERS)
@MUTATIONS
@given(data=st.data())
def test_loaders_take_mutated_files(name: str, data: st.DataObject, tmp_path: Path) -> None:
    loader = LOADERS[name]
    attempt(loader, data.draw(mutated(loader.seed), label="content"), tmp_path)


def test_the_seeds_are_valid_files(tmp_path: Path) -> None:
    """The mutations start from files each loader reads: the fuzzing reaches past the first check."""
    for loader in LOADERS.values():
        assert attempt(loader, loader.seed, tmp_path) is not None


def test_a_directory_a_missing_file_and_a_huge_line_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    huge = tmp_path / "huge.csv"
    huge.write_bytes(b"7" * 10_000_000)  # one 10 MB line
    for name, loader in LOADERS.items():
        for path in (tmp_path / "folder.csv", tmp_path / "missing.csv"):
            with pytest.raises(loader.error) as caught:
                loader.read(path)
            assert str(caught.value).startswith(f"{path}: "), (name, str(caught.value))
        if name == "charlm text":  # one long line is text
            continue
        with pytest.raises(loader.error) as caught:
            loader.read(huge)
        message = str(caught.value)
        assert message.startswith(str(huge)) and len(message) < 1000, (name, message[:1000])
    assert len(read_text_file(huge)) == 10_000_000


def test_a_byte_order_mark_hides_no_row_of_numbers(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    path.write_bytes("\ufeff1,2\n3 4\n".encode())
    assert read_series(path).tolist() == [[1.0, 2.0], [3.0, 4.0]]


# -- checkpoints, saved models and Keras files ---------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A training checkpoint: a small model, its Adam state after a step, the trainer's position."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path_factory.mktemp("checkpoint") / "checkpoint.safetensors", model, optimizer,
                           task="tiny", model_config={"a": 1}, train_config={"lr": 0.1},
                           trainer_state={"step": 1})  # fmt: skip
    return path.read_bytes()


@MUTATIONS
@given(data=st.data())
def test_checkpoints_with_random_or_mutated_bytes(checkpoint_file: bytes, data: st.DataObject, tmp_path: Path) -> None:
    seed = checkpoint_file
    header = 8 + int.from_bytes(seed[:8], "little")
    content = data.draw(
        st.binary(max_size=300)
        | mutated(seed)
        | st.tuples(st.integers(0, header), st.binary(min_size=1, max_size=4)).map(
            lambda edit: seed[: edit[0]] + edit[1] + seed[edit[0] + len(edit[1]) :]
        ),  # an edit inside the JSON header
        label="content",
    )
    attempt(Loader(read_checkpoint, CheckpointError, check_checkpoint, seed, ".safetensors"), content, tmp_path)


def test_checkpoint_whose_header_lost_its_task_is_refused(checkpoint_file: bytes, tmp_path: Path) -> None:
    """The case hypothesis found: an edit of the JSON header that drops the "task" key (KeyError
    before, a CheckpointError now)."""
    header_size = int.from_bytes(checkpoint_file[:8], "little")
    header = json.loads(checkpoint_file[8 : 8 + header_size])
    del header["__metadata__"]["task"]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "no_task.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + checkpoint_file[8 + header_size :])
    with pytest.raises(CheckpointError, match="metadata 'task' must name the task"):
        read_checkpoint(path)


def check_checkpoint(saved: dict, content: bytes) -> None:
    assert set(saved) >= {"model", "optimizer_tensors", "rng", "trainer_state", "model_config"}


# Numbers stay small: a config.json with num_layers=10**9 would build a billion layers (a known limit,
# see docs/robustness.md); sizes that ask for billions of weights are tested on their own below.
NUMBERS = st.integers(-3, 40) | st.floats(-100, 100) | st.sampled_from([math.nan, math.inf, -math.inf])
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
CONFIGS = {
    "charlm": CharLMConfig("abc \n", hidden_size=4, embedding_size=3),
    "pairs": PairsConfig(["a", "b"], hidden_sizes=[3], embedding_size=3, dense_size=3),
    "classify": ClassifyConfig(["x", "y"], ["f"], [0.0], [1.0], hidden_size=3),
    "forecast": ForecastConfig(["y"], [0.0], [1.0], window=4, horizon=2, hidden_size=3),
}
MODELS_BY_TASK = {"charlm": CharLM, "pairs": PairClassifier, "classify": SequenceClassifier, "forecast": Forecaster}


@pytest.mark.parametrize("task", CONFIGS)
@MUTATIONS
@given(data=st.data())
def test_saved_models_with_wrong_config_fields(task: str, data: st.DataObject, tmp_path: Path) -> None:
    """A ``config.json`` with fields removed, added or given any JSON value (sizes kept small)."""
    folder = tmp_path / task
    MODELS_BY_TASK[task](CONFIGS[task]).save_pretrained(folder)
    document = json.loads((folder / "config.json").read_text())
    names = [field.name for field in fields(CONFIGS[task])]
    changes = data.draw(st.dictionaries(st.sampled_from([*names, "extra", "__class__"]), JSON | st.just(...),
                                        min_size=1, max_size=3), label="changes")  # fmt: skip
    for name, value in changes.items():
        if value is ...:
            document["config"].pop(name, None)
        else:
            document["config"][name] = value
    (folder / "config.json").write_text(json.dumps(document))
    try:
        model = load_model(folder)
    except CheckpointError as error:
        assert str(error).startswith(str(folder)), str(error)
        return
    assert isinstance(model, TaskModel) and model.task == task


@pytest.mark.parametrize("task", CONFIGS)
def test_a_config_asking_for_billions_of_weights_allocates_nothing(task: str, tmp_path: Path) -> None:
    """The saved weights are small; a config.json edited to ask for 2000 units is refused by
    comparing shapes before any allocation, and one asking for 10**6 or 10**9 units (terabytes of
    weights) by counting the stack's weights before anything is built (under the test's memory cap,
    an attempt to allocate would fail the test)."""
    folder = tmp_path / task
    MODELS_BY_TASK[task](CONFIGS[task]).save_pretrained(folder)
    document = json.loads((folder / "config.json").read_text())
    field = "hidden_sizes" if task == "pairs" else "hidden_size"
    for units, message in ((2000, r"model.safetensors: weights do not fit the model: .*has shape"),
                           (10**6, r"config.json: .* would have about .*e\+1\d weights"),
                           (10**9, r"config.json: .* would have about .*e\+1\d weights")):  # fmt: skip
        document["config"][field] = [units] if task == "pairs" else units
        (folder / "config.json").write_text(json.dumps(document))
        with pytest.raises(CheckpointError, match=message):
            load_model(folder)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A functional Keras 3 model (embedding with a mask, a shared bidirectional LSTM, a merge,
    a dense layer), saved by Keras."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    layers = keras.layers
    left, right = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    embed = layers.Embedding(12, 4, mask_zero=True)
    encode = layers.Bidirectional(layers.LSTM(3))
    merged = layers.Concatenate()([encode(embed(left)), encode(embed(right))])
    model = keras.Model([left, right], layers.Dense(1, activation="sigmoid")(merged))
    path = tmp_path_factory.mktemp("keras") / "siamese.keras"
    model.save(path)
    return path.read_bytes()


def rezip(archive: bytes, config: bytes) -> bytes:
    """``archive`` with its ``config.json`` replaced by ``config``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(buffer, "w") as target:
        for entry in source.namelist():
            target.writestr(entry, config if entry == "config.json" else source.read(entry))
    return buffer.getvalue()


def replace_somewhere(document: object, path: list[int], value: object) -> object:
    """``document`` with the value reached by following ``path`` (indices taken modulo the sizes
    of the lists and objects on the way) replaced by ``value``."""
    if not path or not isinstance(document, dict | list) or not document:
        return value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[key] = replace_somewhere(document[key], path[1:], value)  # type: ignore[index]
    return copy


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")  # Keras's
@MUTATIONS
@given(data=st.data())
def test_keras_files_with_mutated_bytes_or_configs(keras_file: bytes, data: st.DataObject, tmp_path: Path) -> None:
    from lstmkit.keras import KerasFileError, load_keras_file

    with zipfile.ZipFile(io.BytesIO(keras_file)) as archive:
        config = json.loads(archive.read("config.json"))
    content = data.draw(
        st.binary(max_size=300)
        | mutated(keras_file)
        | st.tuples(st.lists(st.integers(0, 50), max_size=8), JSON).map(
            lambda edit: rezip(keras_file, json.dumps(replace_somewhere(config, *edit)).encode())
        ),
        label="content",
    )
    attempt(Loader(load_keras_file, KerasFileError, check_module, keras_file, ".keras"), content, tmp_path)


def check_module(model: torch.nn.Module, content: bytes) -> None:
    assert isinstance(model, torch.nn.Module) and not model.training


# -- structured files whose problems are known in advance ----------------------------------------------

# Characters a field may hold, including separators that are not line breaks in a TSV or CSV file
# (form feed, U+2028 LINE SEPARATOR, U+0085) and rich markup.
FIELD_TEXT = st.text(
    st.characters(blacklist_characters='\t\n\r"\x00,', blacklist_categories=("Cs",)), max_size=12
) | st.sampled_from(["", "  ", "?", "[/]", "a\u2028b", "x\x0cy", "\x85", "\ufeffhi", "caf\u00e9", "\u65e5\u672c"])
LABELS = st.sampled_from(["0", "1", " 1 ", "2", "-1", "0.5", "yes", "", "01", "\u0661"])


@STRUCTURED
@given(rows=st.lists(st.tuples(FIELD_TEXT, FIELD_TEXT, LABELS), min_size=1, max_size=8), drop_empty=st.booleans())
def test_quora_files_with_any_questions_and_labels(rows: list, drop_empty: bool, tmp_path: Path) -> None:
    """Labels outside {0, 1} are refused on their line; empty questions too, unless dropped; every
    other pair is read exactly as written (line separators inside a field are not line breaks)."""
    path = tmp_path / "pairs.tsv"
    lines = ["id\tquestion1\tquestion2\tis_duplicate"] + [f"p{i}\t{a}\t{b}\t{label}" for i, (a, b, label) in
                                                         enumerate(rows)]  # fmt: skip
    path.write_bytes(("\n".join(lines) + "\n").encode())
    expected: list[tuple[str, str, str, int]] = []
    problem = None
    for index, (first, second, label) in enumerate(rows):
        if label.strip() not in ("0", "1"):
            problem = f"{path}, line {index + 2}, column 'is_duplicate': expected 0 or 1, got {label.strip()!r}"
            break
        if not first.strip() or not second.strip():
            if drop_empty:
                continue
            problem = f"{path}, line {index + 2}: empty question"
            break
        expected.append((f"p{index}", first, second, int(label)))
    if problem is None and not expected:
        problem = f"{path}: a header but no pairs"
    if problem is not None:
        with pytest.raises(PairsDataError) as caught:
            read_quora_tsv(path, drop_empty=drop_empty)
        assert str(caught.value).startswith(problem), (str(caught.value), problem)
        return
    pairs = read_quora_tsv(path, drop_empty=drop_empty)
    assert list(zip(pairs.ids, pairs.first, pairs.second, pairs.labels or [], strict=True)) == expected


@STRUCTURED
@given(labels=st.lists(st.integers(-3, 3), min_size=1, max_size=6))
def test_pair_sets_refuse_labels_outside_zero_and_one(labels: list[int]) -> None:
    names = [str(i) for i in range(len(labels))]
    outside = sorted(set(labels) - {0, 1})
    if outside:
        with pytest.raises(PairsDataError, match=rf"memory: labels must be 0 or 1, got {outside}".replace("[", r"\[")):
            PairSet(names, ["a"] * len(labels), ["b"] * len(labels), labels, "memory")
    else:
        assert PairSet(names, ["a"] * len(labels), ["b"] * len(labels), labels, "memory").labels == labels


NON_FINITE = st.sampled_from(["nan", "NaN", "-nan", "+nan", "inf", "-inf", "+Infinity", "-INFINITY", "1e999",
                              "-1e400", " nan "])  # fmt: skip
FINITE = st.floats(allow_nan=False, allow_infinity=False)
FORECAST_PROBLEMS = ("none", "non-finite", "empty", "text", "time goes back", "fields")


@STRUCTURED
@given(
    values=st.lists(st.tuples(FINITE, FINITE), min_size=1, max_size=12),
    gaps=st.lists(st.integers(1, 1000), min_size=12, max_size=12),
    problem=st.sampled_from(FORECAST_PROBLEMS),
    where=st.tuples(st.integers(0, 11), st.integers(0, 1)),
    spelling=NON_FINITE,
)
def test_series_files_with_nan_infinity_and_other_problems(
    values: list, gaps: list[int], problem: str, where: tuple[int, int], spelling: str, tmp_path: Path
) -> None:
    """A two-column series with a time column: read exactly, or refused on the line and column of
    its one problem (NaN or infinity in any spelling, an empty or non-numeric value, a time that
    does not increase, a missing field)."""
    row, column = where[0] % len(values), ("y", "x")[where[1]]
    times = np.cumsum(gaps[: len(values)]) - 500
    cells = [[str(int(time)), repr(y), repr(x)] for time, (y, x) in zip(times, values, strict=True)]
    expected = None
    if problem == "non-finite":
        cells[row][1 + where[1]] = spelling
        expected = f"line {row + 2}, column {column!r}: expected a finite number, got {spelling.strip()!r}"
    elif problem == "empty":
        cells[row][1 + where[1]] = " "
        expected = f"line {row + 2}, column {column!r}: empty value; expected a number"
    elif problem == "text":
        cells[row][1 + where[1]] = "12 kg"
        expected = f"line {row + 2}, column {column!r}: expected a number, got '12 kg'"
    elif problem == "fields":
        del cells[row][2]
        expected = f"line {row + 2}: 2 fields, expected 3"
    elif problem == "time goes back" and row > 0:
        cells[row][0] = cells[row - 1][0]
        expected = f"line {row + 2}, column 't': the time {cells[row][0]!r} does not come after"
    path = tmp_path / "series.csv"
    path.write_text("t,y,x\n" + "".join(",".join(line) + "\n" for line in cells))
    if expected is not None:
        with pytest.raises(SeriesDataError) as caught:
            read_csv_series(path, ["y", "x"], "t")
        assert str(caught.value).startswith(f"{path}, {expected}"), (str(caught.value), expected)
        return
    series = read_csv_series(path, ["y", "x"], "t")
    assert series.values.tolist() == [list(pair) for pair in values] and series.time.tolist() == times.tolist()


@STRUCTURED
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 3)),
    spots=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 2), st.sampled_from([math.nan, math.inf, -math.inf])),
                   min_size=1, max_size=4),
)  # fmt: skip
def test_series_in_memory_refuse_nan_and_infinity(shape: tuple[int, int], spots: list) -> None:
    values = np.zeros(shape)
    for row, column, value in spots:
        values[row % shape[0], column % shape[1]] = value
    with pytest.raises(SeriesDataError, match="the values hold NaN or infinity"):
        Series(values, [f"c{i}" for i in range(shape[1])], np.arange(float(shape[0])))


# names with a character that str.splitlines (but not CSV) takes for a line break
SEPARATED_NAMES = st.sampled_from(["a\u2028b", "x\x0cy", "p\x85q", "s\x1ct"])
SEQUENCE_NAMES = st.text(st.characters(blacklist_characters=',"\r\n\x00', blacklist_categories=("Cs", "Z", "Cc")),
                         min_size=1, max_size=5) | SEPARATED_NAMES  # fmt: skip
CLASSIFY_PROBLEMS = ("none", "non-finite", "text", "repeated step", "two labels", "empty label")


@STRUCTURED
@given(
    sequences=st.dictionaries(
        SEQUENCE_NAMES,
        st.tuples(
            st.sampled_from(["a", "b", "[/]", "\u00e9"]),
            st.dictionaries(st.integers(-50, 50), st.tuples(st.floats(width=32, allow_nan=False,
                            allow_infinity=False), st.floats(width=32, allow_nan=False, allow_infinity=False)),
                            min_size=1, max_size=5),
        ),
        min_size=1,
        max_size=4,
    ),
    order=st.randoms(use_true_random=False),
    problem=st.sampled_from(CLASSIFY_PROBLEMS),
    which=st.integers(0, 100),
    spelling=NON_FINITE,
)  # fmt: skip
def test_sequence_files_in_any_row_order_with_known_problems(
    sequences: dict, order, problem: str, which: int, spelling: str, tmp_path: Path
) -> None:
    """Rows of several sequences in any order: each sequence comes back sorted by step, or the file
    is refused on the line of its one problem."""
    rows = [[name, str(step), label, repr(x), repr(y)] for name, (label, steps) in sequences.items()
            for step, (x, y) in steps.items()]  # fmt: skip
    order.shuffle(rows)
    row = which % len(rows)
    line = row + 2
    expected = None
    if problem == "non-finite":
        rows[row][3] = spelling
        expected = f"line {line}, column 'c1': expected a finite number, got {spelling.strip()!r}"
    elif problem == "text":
        rows[row][4] = "n/a"
        expected = f"line {line}, column 'c2': expected a number, got 'n/a'"
    elif problem == "repeated step":
        rows.append(list(rows[row]))
        expected = f"line {len(rows) + 1}: sequence {rows[row][0].strip()!r} repeats step {rows[row][1]}"
    elif problem == "two labels":
        first = min(i for i, other in enumerate(rows) if other[0].strip() == rows[row][0].strip())
        rows.append([rows[first][0], "99", rows[first][2] + "z", "0", "0"])
        expected = f"line {len(rows) + 1}: sequence {rows[first][0].strip()!r} has label {rows[first][2] + 'z'!r}"
    elif problem == "empty label":
        rows[row][2] = " "
        expected = f"line {line}: empty label for sequence {rows[row][0].strip()!r}"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([["sequence_id", "step", "label", "c1", "c2"], *rows])
    path = tmp_path / "sequences.csv"
    path.write_text(text.getvalue())
    names = [name.strip() for name in sequences]
    assume(len(set(names)) == len(names) and all(names))  # the reader strips the names
    if expected is not None:
        with pytest.raises(SequenceDataError) as caught:
            read_sequence_csv(path)
        assert str(caught.value).startswith(f"{path}, {expected}"), (str(caught.value), expected)
        return
    data = read_sequence_csv(path)
    first_rows = list(dict.fromkeys(row[0].strip() for row in rows))
    assert data.ids == first_rows
    for name, sequence, label in zip(data.ids, data.sequences, data.labels or [], strict=True):
        original = next(value for key, value in sequences.items() if key.strip() == name)
        assert label == original[0]
        steps = sorted(original[1].items())
        assert torch.equal(sequence, torch.tensor([list(values) for _, values in steps], dtype=torch.float32))


# -- models: zero-length sequences, long sequences, unseen characters --------------------------------------


@MODELS
@given(
    kind=st.sampled_from(sorted(CELL_KINDS)),
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    padding=st.integers(0, 2),
    bidirectional=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_zero_length_sequences_in_a_batch(kind: str, lengths: list[int], padding: int, bidirectional: bool,
                                          seed: int) -> None:  # fmt: skip
    """Each sequence of a padded batch, empty ones included, gives what it gives alone; an empty
    one gives zero outputs and keeps the initial (zero) state."""
    steps = max(lengths) + padding
    assume(steps >= 1)
    torch.manual_seed(seed)
    layer = recurrent_layer(kind, 3, 4, num_layers=2, bidirectional=bidirectional).double().eval()
    x = torch.randn(len(lengths), steps, 3, dtype=torch.float64)
    output, state = layer(x, lengths=lengths)
    states = state if isinstance(state, tuple) else (state,)
    for row, length in enumerate(lengths):
        assert not output[row, length:].any(), "padding steps must give zeros"
        if length == 0:
            assert not any(s[:, row].any() for s in states), "an empty sequence keeps the initial state"
            continue
        alone, alone_state = layer(x[row : row + 1, :length])
        torch.testing.assert_close(output[row, :length], alone[0])
        for got, want in zip(states, alone_state if isinstance(alone_state, tuple) else (alone_state,), strict=True):
            torch.testing.assert_close(got[:, row], want[:, 0])


def test_task_models_refuse_zero_length_sequences_by_name() -> None:
    classifier = SequenceClassifier(CONFIGS["classify"])
    with pytest.raises(ValueError, match=r"every sequence needs at least one step; got lengths \[2, 0\]"):
        classifier(torch.zeros(2, 2, 1), torch.tensor([2, 0]))
    with pytest.raises(ValueError, match="every sequence needs at least one step"):
        predict_logits(classifier, [torch.ones(3, 1), torch.zeros(0, 1)])
    pairs = PairClassifier(CONFIGS["pairs"])
    with pytest.raises(ValueError, match=r"every sentence needs at least one word; got second lengths \[0\]"):
        pairs(torch.tensor([[3]]), torch.tensor([1]), torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(ValueError, match="every sentence needs at least one word"):
        predict_probabilities(pairs, [(torch.tensor([3, 4]), torch.zeros(0, dtype=torch.long))])


@MODELS
@given(lengths=st.lists(st.integers(1, 600), min_size=1, max_size=4), pooling=st.sampled_from(["last", "mean", "max"]))
def test_classifier_reads_sequences_far_longer_than_training(lengths: list[int], pooling: str) -> None:
    """JapaneseVowels utterances have at most 29 frames; hundreds of steps, batched with short ones,
    give finite logits equal to each sequence's alone."""
    torch.manual_seed(len(lengths))
    config = ClassifyConfig(["a", "b", "c"], ["x", "y"], [0.5, -1.0], [2.0, 0.5], hidden_size=5,
                            bidirectional=True, pooling=pooling)  # fmt: skip
    model = SequenceClassifier(config).eval()
    sequences = [torch.randn(length, 2) * 3 for length in lengths]
    logits = predict_logits(model, sequences)
    assert bool(torch.isfinite(logits).all())
    with torch.no_grad():
        alone = torch.cat([model(sequence[None]) for sequence in sequences])
    torch.testing.assert_close(logits, alone, rtol=1e-4, atol=1e-5)


@MODELS
@given(lengths=st.lists(st.tuples(st.integers(1, 400), st.integers(1, 400)), min_size=1, max_size=3),
       architecture=st.sampled_from(["siamese", "single"]))  # fmt: skip
def test_pair_classifier_reads_sentences_far_longer_than_training(lengths: list, architecture: str) -> None:
    torch.manual_seed(len(lengths))
    model = PairClassifier(PairsConfig(["a", "b", "c"], architecture=architecture, hidden_sizes=[4], embedding_size=3,
                                       dense_size=4, dropout=0.0)).eval()  # fmt: skip
    pairs = [(torch.randint(1, 6, (a,)), torch.randint(1, 6, (b,))) for a, b in lengths]
    probabilities = predict_probabilities(model, pairs)
    alone = torch.cat([predict_probabilities(model, [pair]) for pair in pairs])
    assert bool(((probabilities >= 0) & (probabilities <= 1)).all())
    torch.testing.assert_close(probabilities, alone, rtol=1e-4, atol=1e-5)


@MODELS
@given(length=st.integers(17, 2000), chunk=st.sampled_from([16, 100]))
def test_character_model_streams_texts_far_longer_than_its_windows(length: int, chunk: int) -> None:
    """Trained on windows of 16 or 100 characters, the model reads any length: one pass over a long
    text equals reading it window by window with the state carried over."""
    torch.manual_seed(length)
    model = CharLM(CharLMConfig("abcdefgh", hidden_size=8, embedding_size=4)).eval()
    ids = torch.randint(0, 9, (1, length))
    with torch.no_grad():
        whole, _ = model(ids)
        parts, state = [], None
        for start in range(0, length, chunk):
            logits, state = model(ids[:, start : start + chunk], state)
            parts.append(logits)
    assert bool(torch.isfinite(whole).all())
    torch.testing.assert_close(whole, torch.cat(parts, dim=1), rtol=1e-4, atol=1e-5)


@MODELS
@given(steps=st.integers(4, 3000), relative=st.booleans())
def test_forecaster_reads_only_the_last_window_of_a_long_series(steps: int, relative: bool) -> None:
    """A series far longer than the training one: the forecast is that of its last window alone."""
    torch.manual_seed(steps)
    config = ForecastConfig(["y"], [10.0], [3.0], window=4, horizon=2, hidden_size=4, relative=relative)
    model = Forecaster(config).eval()
    values = np.cumsum(np.random.default_rng(steps).normal(size=(steps, 1)), axis=0)
    whole = Series(values, ["y"], np.arange(float(steps)))
    tail = Series(values[-4:], ["y"], np.arange(float(steps - 4), float(steps)))
    times, forecast = predict_next(model, whole)
    tail_times, tail_forecast = predict_next(model, tail)
    assert times is not None and times.tolist() == [float(steps), float(steps + 1)] == tail_times.tolist()
    assert np.isfinite(forecast).all() and forecast.tolist() == tail_forecast.tolist()
    with pytest.raises(SeriesDataError, match=r"3 steps, the model needs the last 4"):
        predict_next(model, Series(values[:3], ["y"], np.arange(3.0)))


VOCABULARY = "abc \n"


@MODELS
@given(prompt=st.text(max_size=30), seed=st.integers(0, 1000))
def test_generation_after_characters_never_seen(prompt: str, seed: int) -> None:
    """Characters outside the vocabulary read as the unknown character, all alike; what is generated
    is always in the vocabulary, never the unknown character."""
    model = CharLM(CharLMConfig(VOCABULARY, hidden_size=8, embedding_size=4))

    def sample(text: str) -> str:
        return "".join(generate(model, text, 12, temperature=1.5, generator=torch.Generator().manual_seed(seed)))

    text = sample(prompt)
    assert len(text) == 12 and set(text) <= set(VOCABULARY)
    assert text == sample("".join(c if c in VOCABULARY else UNKNOWN for c in prompt) or "\n")


# -- command-line overrides --------------------------------------------------------------------------

SETTING_VALUES = st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "0", "1e-300", "", "none", "[1, 2]", "{",
                                  "true", "2.5", "1" + "0" * 22, "adam", "cosine"]) | st.text(max_size=6)  # fmt: skip


@STRUCTURED
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from([f.name for f in fields(TrainConfig)] + ["", " ", "nope"]), SETTING_VALUES),
        max_size=3,
    )
)
def test_training_overrides_give_a_valid_config_or_a_value_error(overrides: list[tuple[str, str]]) -> None:
    """``--set key=value`` for the training settings: a config whose numbers are usable (finite,
    positive where they must be) or a ValueError that names the setting."""
    texts = [f"{key}={value}" for key, value in overrides]
    try:
        config = apply_overrides(TrainConfig(), texts)
    except ValueError as error:
        assert str(error).startswith("--set"), str(error)
        return
    for name in ("lr", "weight_decay", "min_lr_ratio", "max_seconds", "clip_grad_norm"):
        value = getattr(config, name)
        assert value is None or math.isfinite(value), f"{name}={value} accepted"
    assert config.lr > 0 and 0 <= config.min_lr_ratio <= 1 and config.weight_decay >= 0
    assert min(config.epochs, config.batch_size, config.log_every) >= 1
