"""Sequence classification: JapaneseVowels and CSV readers (every malformed file named by line),
the stratified split, padding that never reaches the logits, metrics against scikit-learn, training
that beats the trivial baselines, checkpoints, --resume bit for bit, and the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt
from task_helpers import (
    assert_clear_error,
    assert_command_line_resume_is_exact,
    assert_evaluate_warns_once_the_data_changed,
    assert_resume_after_crash_is_exact,
    flat,
    runner,
    tiny,
    train_in_two_processes,
    train_tiny,
)

from lstmkit.cli import app
from lstmkit.tasks.classify import task as classify_task
from lstmkit.tasks.classify.data import (
    SequenceDataError,
    SequenceSet,
    feature_statistics,
    japanese_vowels,
    read_sequence_csv,
    read_ts_file,
    validation_split,
    write_sequence_csv,
)
from lstmkit.tasks.classify.model import (
    ClassifyConfig,
    SequenceClassifier,
    accuracy,
    confusion_matrix,
    per_class_accuracy,
    predict_logits,
)
from lstmkit.tasks.classify.task import (
    ClassifyData,
    configure,
    confusion_figure,
    evaluate_set,
    load_splits,
    train,
)

metrics = pytest.importorskip("sklearn.metrics")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SequenceClassifier, dict]:
    """The tiny preset trained once on JapaneseVowels (a few seconds)."""
    out = tmp_path_factory.mktemp("tiny")
    model, _, evaluations = train_tiny(configure, train, out)
    return out, model, evaluations


def alone(model: SequenceClassifier, sequences: list[torch.Tensor]) -> torch.Tensor:
    """Logits of every sequence fed on its own: no padding anywhere."""
    with torch.no_grad():
        return torch.cat([model(s[None], torch.tensor([len(s)])) for s in sequences])


def synthetic(count: int, seed: int) -> SequenceSet:
    """Three classes told apart by the mean of feature ``a`` over a sequence of 3 to 12 noisy steps."""
    generator = torch.Generator().manual_seed(seed)
    names, sequences, labels = [], [], []
    for index in range(count):
        label = index % 3
        steps = int(torch.randint(3, 13, (1,), generator=generator))
        x = torch.randn(steps, 2, generator=generator)
        x[:, 0] += 1.2 * (label - 1)
        names.append(f"s{index}")
        sequences.append(x)
        labels.append(["down", "flat", "up"][label])
    return SequenceSet(names, sequences, labels, ["a", "b"], "synthetic")


# -- data -----------------------------------------------------------------------------------------
def test_japanese_vowels_keeps_every_utterance_length() -> None:
    from sktime.datasets import load_japanese_vowels

    train_set, test_set = japanese_vowels("train"), japanese_vowels("test")
    assert (len(train_set), len(test_set)) == (270, 370)
    frames, labels = load_japanese_vowels(split="test", return_type="df-list")  # sktime's own reader
    assert test_set.features == [str(name) for name in frames[0].columns]
    for sequence, frame in zip(test_set.sequences, frames, strict=True):
        assert torch.equal(sequence, torch.tensor(frame.to_numpy(), dtype=torch.float32))
    assert min(len(s) for s in test_set.sequences) == 7 and max(len(s) for s in test_set.sequences) == 29
    assert test_set.labels == [str(label) for label in labels]
    assert sorted(set(train_set.labels)) == [str(i) for i in range(1, 10)]
    assert all(train_set.labels.count(str(i)) == 30 for i in range(1, 10))
    with pytest.raises(ValueError, match="unknown JapaneseVowels split 'dev'"):
        japanese_vowels("dev")


def test_validation_is_a_disjoint_draw_from_train_by_content_hash() -> None:
    splits = load_splits(ClassifyData())
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (211, 59, 370)
    assert all(3 <= splits.validation.labels.count(str(i)) <= 12 for i in range(1, 10)), "about 6 of 30 a class"
    assert not set(splits.train.ids) & set(splits.validation.ids)
    assert set(splits.train.ids) | set(splits.validation.ids) == {f"train-{i}" for i in range(270)}
    again = load_splits(ClassifyData())
    assert again.validation.ids == splits.validation.ids
    assert load_splits(ClassifyData(split_seed=1)).validation.ids != splits.validation.ids
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        validation_split(["a", "b"], ["1", "2"], 1.0)
    with pytest.raises(ValueError, match="no sequence of the 2 falls in the validation part"):
        validation_split(["a", "b"], ["1", "2"], 1e-9)


def test_appended_sequences_never_move_one_between_train_and_validation(tmp_path: Path) -> None:
    data = synthetic(1200, seed=5)
    path = write_sequence_csv(data.subset(range(900)), tmp_path / "data.csv")
    before = load_splits(ClassifyData(dataset=str(path)))
    for label in ("down", "flat", "up"):  # 300 a class: a share of 0.2 has a standard deviation of 0.023
        share = before.validation.labels.count(label) / (before.validation.labels + before.train.labels).count(label)
        assert 0.12 < share < 0.28, (label, share)
    rows = path.read_text().splitlines(keepends=True)
    appended = write_sequence_csv(data.subset(range(900, 1200)), tmp_path / "more.csv").read_text().splitlines(True)
    path.write_text("".join([rows[0], *reversed(rows[1:]), *appended[1:]]))  # reordered, then 300 more
    after = load_splits(ClassifyData(dataset=str(path)))
    assert set(before.validation.ids) <= set(after.validation.ids) and set(before.train.ids) <= set(after.train.ids)
    assert len(after.train) + len(after.validation) == 1200
    renamed = data.subset(range(900))
    renamed.ids = [f"copy-{name}" for name in renamed.ids]
    copies = load_splits(ClassifyData(dataset=str(write_sequence_csv(renamed, tmp_path / "renamed.csv"))))
    assert [f"copy-{name}" for name in before.validation.ids] == copies.validation.ids, "content, not names"


def test_evaluate_warns_when_the_data_changed_since_training(tmp_path: Path) -> None:
    data = synthetic(90, seed=6)
    path = write_sequence_csv(data.subset(range(80)), tmp_path / "data.csv")
    splits = load_splits(ClassifyData(dataset=str(path)))
    counts = {"train": len(splits.train), "validation": len(splits.validation)}
    more = write_sequence_csv(data.subset(range(80, 90)), tmp_path / "more.csv").read_text().splitlines(True)
    assert_evaluate_warns_once_the_data_changed("classify", path, tmp_path / "run", ["--set", "hidden_size=4"],
                                                counts, "validation", "".join(more[1:]))  # fmt: skip


def test_csv_round_trip_with_rows_in_any_order(tmp_path: Path) -> None:
    data = synthetic(12, seed=3)
    path = write_sequence_csv(data, tmp_path / "data.csv")
    lines = path.read_text().splitlines()
    shuffled = [lines[0], *reversed(lines[1:])]
    path.write_text("\n".join(shuffled) + "\n\n")
    read = read_sequence_csv(path)
    assert read.features == ["a", "b"] and sorted(read.ids) == sorted(data.ids)
    for name, sequence, label in zip(read.ids, read.sequences, read.labels, strict=True):
        index = data.ids.index(name)
        assert torch.equal(sequence, data.sequences[index]) and label == data.labels[index]


MALFORMED = [
    ("empty.csv", "", r"empty.csv: the file is empty"),
    ("header.csv", "sequence_id,step,label,a\n", r"header.csv: a header but no rows"),
    ("nostep.csv", "sequence_id,label,a\ns,x,1\n", r"nostep.csv, line 1: missing column\(s\) \['step'\]"),
    ("nolabel.csv", "sequence_id,step,a\ns,0,1\n", r"nolabel.csv, line 1: missing column\(s\) \['label'\]"),
    ("nofeature.csv", "sequence_id,step,label\ns,0,x\n", r"nofeature.csv, line 1: no feature columns"),
    ("twice.csv", "sequence_id,step,label,a,a\ns,0,x,1,2\n", r"twice.csv, line 1: duplicated columns \['a'\]"),
    ("text.csv", "sequence_id,step,label,a\ns,0,x,1\ns,1,x,abc\n",
     r"text.csv, line 3, column 'a': expected a number, got 'abc'"),
    ("nan.csv", "sequence_id,step,label,a\ns,0,x,1\ns,1,x,nan\n",
     r"nan.csv, line 3, column 'a': expected a finite number, got 'nan'"),
    ("inf.csv", "sequence_id,step,label,a\ns,0,x,-inf\n", r"inf.csv, line 2, column 'a': expected a finite number"),
    ("labels.csv", "sequence_id,step,label,a\ns,0,yes,1\nt,0,no,2\ns,1,no,3\n",
     r"labels.csv, line 4: sequence 's' has label 'no', but line 2 gave it 'yes'"),
    ("fields.csv", "sequence_id,step,label,a\ns,0,x\n", r"fields.csv, line 2: 3 fields, expected 4"),
    ("step.csv", "sequence_id,step,label,a\ns,0.5,x,1\n", r"step.csv, line 2, column 'step': expected an integer"),
    ("repeat.csv", "sequence_id,step,label,a\ns,0,x,1\ns,1,x,1\ns,1,x,2\n",
     r"repeat.csv, line 4: sequence 's' repeats step 1 \(first on line 3\)"),
    ("nolabelvalue.csv", "sequence_id,step,label,a\ns,0,,1\n", r"nolabelvalue.csv, line 2: empty label"),
    ("noid.csv", "sequence_id,step,label,a\n,0,x,1\n", r"noid.csv, line 2: empty sequence_id"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_csv_files_are_named_with_their_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SequenceDataError, match=message):
        read_sequence_csv(path)


TS_HEADER = "# a comment\n@problemName toy\n@timeStamps false\n@classLabel true a B\n@data\n"
MALFORMED_TS = [
    ("stamps.ts", "@timeStamps true\n@data\n", r"stamps.ts, line 1: '@timeStamps true'; only labelled files"),
    ("unlabelled.ts", "@classLabel false\n@data\n", r"unlabelled.ts, line 1: '@classLabel false'; only labelled"),
    ("nodata.ts", TS_HEADER, r"nodata.ts: no sequences"),
    ("nolabel.ts", TS_HEADER + "1,2:3,4\n", r"nolabel.ts, line 6: label '3,4' is not one of the classes \['a', 'B'\]"),
    ("fewer.ts", "@dimensions 3\n@data\n1:2:a\n", r"fewer.ts, line 3: 2 dimensions, expected 3"),
    ("dims.ts", TS_HEADER + "1,2:3,4:a\n1,2:B\n", r"dims.ts, line 7: 1 dimensions, expected 2"),
    ("ragged.ts", TS_HEADER + "1,2:3:a\n", r"ragged.ts, line 6: the dimensions have different lengths \[2, 1\]"),
    ("missing.ts", TS_HEADER + "1,?:3,4:a\n", r"missing.ts, line 6, column 'dim_0': expected a number, got '\?'"),
]


@pytest.mark.parametrize(("name", "content", "message"), MALFORMED_TS, ids=[m[0] for m in MALFORMED_TS])
def test_ts_files_are_read_and_checked(tmp_path: Path, name: str, content: str, message: str) -> None:
    good = tmp_path / "good.ts"
    good.write_text(TS_HEADER + "1,2,3:4,5,6:a\n\n7:8:B\n")
    data = read_ts_file(good)
    assert data.ids == ["good-0", "good-1"] and data.labels == ["a", "B"] and data.features == ["dim_0", "dim_1"]
    assert data.sequences[0].tolist() == [[1, 4], [2, 5], [3, 6]] and data.sequences[1].tolist() == [[7, 8]]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SequenceDataError, match=message):
        read_ts_file(path)


def test_other_unusable_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SequenceDataError, match="missing.csv: no such file"):
        read_sequence_csv(tmp_path / "missing.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("sequence_id,step,label,a\ncaf\xe9,0,x,1\n".encode("latin-1"))
    with pytest.raises(SequenceDataError, match="latin.csv, line 2: not valid UTF-8"):
        read_sequence_csv(latin)
    good = tmp_path / "good.csv"
    good.write_text("sequence_id,step,label,a,b\ns,0,x,1,2\n")
    with pytest.raises(SequenceDataError, match=r"good.csv, line 2: label 'x' is not one of the classes \['y', 'z'\]"):
        read_sequence_csv(good, classes=["y", "z"])
    with pytest.raises(SequenceDataError, match=r"good.csv, line 1: .*model's \['a', 'c'\]; missing \['c'\], unexp"):
        read_sequence_csv(good, features=["a", "c"])
    with pytest.raises(SequenceDataError, match="sequence 'z' has no steps"):
        SequenceSet(["z"], [torch.zeros(0, 1)], ["x"], ["a"], "memory")
    with pytest.raises(SequenceDataError, match="sequence 'n' holds NaN"):
        SequenceSet(["n"], [torch.tensor([[float("nan")]])], ["x"], ["a"], "memory")
    with pytest.raises(ValueError, match="every sequence has label 'x'; need two classes"):
        load_splits(ClassifyData(dataset=str(good)))


# -- model ----------------------------------------------------------------------------------------
PADDING_CASES = [
    *[
        (cell, "last", bidirectional)
        for cell in ("lstm", "gru", "rnn", "peephole", "layernorm")
        for bidirectional in (0, 1)
    ],
    *[("lstm", pooling, bidirectional) for pooling in ("mean", "max") for bidirectional in (0, 1)],
]


@pytest.mark.parametrize(("cell", "pooling", "bidirectional"), PADDING_CASES)
def test_padding_never_reaches_the_logits(cell: str, pooling: str, bidirectional: int) -> None:
    config = ClassifyConfig(["a", "b", "c"], ["x", "y"], [0.5, -1.0], [2.0, 0.5], cell=cell, hidden_size=6,
                            num_layers=2, bidirectional=bool(bidirectional), pooling=pooling)  # fmt: skip
    model = SequenceClassifier(config)
    sequences = [torch.randn(n, 2) for n in (3, 7, 1, 5)]
    reference = alone(model.eval(), sequences)
    lengths = torch.tensor([3, 7, 1, 5])
    padded = 50 * torch.randn(4, 11, 2)  # garbage past every length
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
    for mode in (model.eval, model.train):  # inference and training engines
        mode()
        assert torch.allclose(model(padded, lengths), reference, atol=1e-5)
    with torch.no_grad():
        ignoring_lengths = model.eval()(padded)
    assert not torch.allclose(ignoring_lengths[:3], reference[:3], atol=1e-3), "the control must see the padding"


def test_inputs_are_standardised_with_the_stored_statistics() -> None:
    config = ClassifyConfig(["a", "b"], ["x", "y"], [3.0, -2.0], [0.5, 4.0], hidden_size=5)
    model = SequenceClassifier(config).eval()
    plain = SequenceClassifier(ClassifyConfig(["a", "b"], ["x", "y"], [0.0, 0.0], [1.0, 1.0], hidden_size=5)).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(3, 4, 2)
    expected = plain(((x - torch.tensor([3.0, -2.0])) / torch.tensor([0.5, 4.0])), torch.tensor([4, 2, 3]))
    assert torch.allclose(model(x, torch.tensor([4, 2, 3])), expected, atol=1e-6)
    mean, std = feature_statistics([torch.tensor([[1.0, 7.0], [2.0, 7.0]]), torch.tensor([[6.0, 7.0]])])
    assert mean == pytest.approx([3.0, 7.0]) and std == pytest.approx([np.std([1, 2, 6]), 1.0])
    with pytest.raises(ValueError, match="at least one step"):
        model(x, torch.tensor([4, 0, 3]))
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        ClassifyConfig(["a", "b"], ["x"], [0.0], [1.0], pooling="median")
    with pytest.raises(ValueError, match="every std must be positive"):
        ClassifyConfig(["a", "b"], ["x"], [0.0], [0.0])


def test_metrics_match_scikit_learn() -> None:
    generator = torch.Generator().manual_seed(0)
    targets, predictions = torch.randint(0, 5, (200,), generator=generator), torch.randint(0, 5, (200,))
    predictions[:120] = targets[:120]
    matrix = confusion_matrix(targets, predictions, 5)
    assert matrix.tolist() == metrics.confusion_matrix(targets, predictions, labels=range(5)).tolist()
    assert accuracy(matrix) == pytest.approx(metrics.accuracy_score(targets, predictions))
    recall = metrics.recall_score(targets, predictions, labels=range(5), average=None)
    assert per_class_accuracy(matrix) == pytest.approx(recall.tolist())


# -- training -------------------------------------------------------------------------------------
def test_tiny_training_beats_chance_and_the_best_constant_prediction(trained: tuple) -> None:
    out, model, evaluations = trained
    test = evaluations["test"]
    assert test.best_constant == pytest.approx(88 / 370)  # speaker 3 has 88 of the 370 test utterances
    assert test.accuracy > 0.75, f"tiny run: {test.accuracy:.1%} on the test set (chance 11%, constant 23.8%)"
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "curves.png",
                 "confusion.png", "task.json"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluation_matches_an_independent_sequence_by_sequence_computation(trained: tuple) -> None:
    _, model, _ = trained
    test_set = japanese_vowels("test").subset(range(0, 370, 3))  # every third: one at a time is slow
    logits = alone(model, test_set.sequences)
    targets = [int(label) - 1 for label in test_set.labels]
    predicted = logits.argmax(1).tolist()
    test = evaluate_set(model, test_set)
    assert test.accuracy == pytest.approx(metrics.accuracy_score(targets, predicted))
    assert test.matrix.tolist() == metrics.confusion_matrix(targets, predicted, labels=range(9)).tolist()
    assert test.loss == pytest.approx(float(F.cross_entropy(logits, torch.tensor(targets))), rel=1e-4)
    figure = confusion_figure(test, "test")
    axis = figure.axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("predicted class", "true class")
    assert [int(t.get_text()) for t in axis.texts] == test.matrix.flatten().tolist()
    plt.close(figure)
    one = [torch.randn(4, 12)]
    with pytest.raises(ValueError, match="memory: no labels"):
        evaluate_set(model, SequenceSet(["q"], one, None, test_set.features, "memory"))
    with pytest.raises(ValueError, match=r"memory: labels \['10'\] are not among the model's classes"):
        evaluate_set(model, SequenceSet(["q"], one, ["10"], test_set.features, "memory"))


def test_the_saved_folder_predicts_alone(trained: tuple) -> None:
    out, model, _ = trained
    loaded = SequenceClassifier.from_pretrained(out)
    assert loaded.config == model.config
    splits = load_splits(ClassifyData())
    scaler_mean = np.concatenate([s.numpy() for s in splits.train.sequences]).astype(np.float64)
    assert loaded.config.mean == pytest.approx(scaler_mean.mean(0).tolist())
    assert loaded.config.std == pytest.approx(scaler_mean.std(0).tolist())
    sequences = japanese_vowels("test").sequences[:40]
    assert torch.equal(predict_logits(loaded, sequences), predict_logits(model, sequences))


def test_resume_after_a_crash_reaches_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tiny(configure, "checkpoint_every=4", "schedule=cosine", "hidden_size=8", epochs=1)
    assert_resume_after_crash_is_exact(train, settings, classify_task, "cross_entropy_sum", 11, tmp_path, monkeypatch)


# -- command line ---------------------------------------------------------------------------------
def test_command_line_train_on_csv_then_evaluate_and_predict(tmp_path: Path) -> None:
    train_csv = write_sequence_csv(synthetic(150, seed=1), tmp_path / "train.csv")
    test_data = synthetic(60, seed=2)
    test_csv = write_sequence_csv(test_data, tmp_path / "test.csv")
    out = tmp_path / "run"
    result = runner.invoke(app, ["classify", "train", "--preset", "tiny", "--data", str(train_csv), "--test",
                                 str(test_csv), "--out", str(out), "--quiet", "--epochs", "6"])  # fmt: skip
    assert result.exit_code == 0, result.output
    model = SequenceClassifier.from_pretrained(out)
    assert model.config.classes == ["down", "flat", "up"] and model.config.features == ["a", "b"]
    predicted = alone(model, test_data.sequences).argmax(1)
    expected_accuracy = metrics.accuracy_score([model.config.classes.index(x) for x in test_data.labels], predicted)
    assert expected_accuracy > 0.6, "three classes, a third each"
    assert f"test: accuracy {expected_accuracy:.1%} of 60 sequences" in flat(result.output)

    result = runner.invoke(app, ["classify", "evaluate", "--checkpoint", str(out), "--split", "validation"])
    assert result.exit_code == 0, result.output
    assert all(f"│ {name}" in result.output for name in ("down", "flat", "up")), result.output
    result = runner.invoke(app, ["classify", "evaluate", "--checkpoint", str(out), "--data", str(test_csv),
                                 "--plot", str(tmp_path / "cm.png")])  # fmt: skip
    assert result.exit_code == 0 and (tmp_path / "cm.png").exists(), result.output

    unlabelled = tmp_path / "unlabelled.csv"
    with open(test_csv) as source, open(unlabelled, "w", newline="") as target:
        rows = list(csv.reader(source))
        csv.writer(target).writerows([row[:2] + row[3:] for row in rows])
    result = runner.invoke(app, ["classify", "predict", str(unlabelled), "--checkpoint", str(out)])
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.strip().splitlines()]
    assert lines[0] == ["sequence_id", "predicted", "probability"] and len(lines) == 61
    assert [row[0] for row in lines[1:]] == test_data.ids
    assert [row[1] for row in lines[1:]] == [model.config.classes[i] for i in predicted.tolist()]


def test_command_line_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    base = ["classify", "train", "--preset", "tiny", "--quiet", "--epochs", "1", "--set", "hidden_size=8"]
    assert_command_line_resume_is_exact(base, tmp_path, stop=6, steps=14)
    assert json.loads((tmp_path / "split" / "task.json").read_text())["data"]["dataset"] == "japanese_vowels"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--set", "classes=a,b"], "the classes come from the training data"),
        (["train", "--set", "pooling=median"], "unknown pooling 'median'"),
        (["train", "--data", "/nonexistent/file.csv"], "/nonexistent/file.csv: no such file"),
        (["train", "--test", "/tmp/x.csv"], "test= is for a CSV dataset"),
        (["train", "--set", "validation_fraction=1.5"], "validation_fraction must lie strictly between 0 and 1"),
        (["predict", "/nonexistent.csv", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_command_line_errors_are_clear(arguments: list[str], message: str) -> None:
    assert_clear_error(["classify", *arguments], message)


def test_command_line_errors_on_bad_files_for_a_trained_model(trained: tuple, tmp_path: Path) -> None:
    out = trained[0]
    bad = tmp_path / "bad.csv"
    bad.write_text("sequence_id,step,dim_0\ns,0,1\n")
    result = runner.invoke(app, ["classify", "predict", str(bad), "--checkpoint", str(out)])
    assert result.exit_code == 2 and "bad.csv, line 1: the feature columns must be the model's" in result.output
    result = runner.invoke(app, ["classify", "evaluate", "--checkpoint", str(out), "--split", "dev"])
    assert result.exit_code == 2 and "unknown split 'dev'" in result.output, result.output
    result = runner.invoke(app, ["classify", "evaluate", "--checkpoint", str(out), "--data", str(bad)])
    assert result.exit_code == 2 and "missing column(s) ['label']" in result.output, result.output


@pytest.mark.slow
def test_command_line_trains_in_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    output, records = train_in_two_processes(["classify", "train", "--preset", "tiny", "--max-steps", "6"], out)
    assert "test: accuracy" in output and (out / "confusion.png").exists()
    assert len([line for line in records if '"train"' in line]) == 1, "only rank 0 writes the metrics"
