"""The character language model: corpus, vocabulary, metrics against hand computations, training
that beats the unigram baseline on unseen plays, generation, and the command line."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from task_helpers import assert_clear_error, flat, runner, train_in_two_processes

from lstmkit.cli import app
from lstmkit.precision import detect_cpu, resolve_precision
from lstmkit.tasks.charlm.data import (
    TEST_PLAYS,
    VALIDATION_PLAYS,
    CorpusError,
    Vocabulary,
    markdown_play_to_text,
    read_text_file,
    shakespeare_corpus,
    shakespeare_plays,
    unigram_bits_per_character,
)
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig, bits_per_character, generate, next_characters
from lstmkit.tasks.charlm.task import configure, train
from lstmkit.training import read_checkpoint


@pytest.fixture(scope="module")
def plays() -> dict[str, str]:
    return shakespeare_plays()


def test_markdown_becomes_speaker_blocks_without_stage_directions() -> None:
    markdown = (
        "# Hamlet\n\n## ACT I\n\n### SCENE I. Elsinore.\n\n_Enter BERNARDO and\nFRANCISCO_\n\n"
        "**BERNARDO**  \nWho's there?\n\n**FRANCISCO**  \nNay, answer me: stand,  \n"
        "and unfold yourself. __\\[Aside]_\n\n*Exeunt.*\n"
    )
    assert markdown_play_to_text(markdown) == (
        "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand,\nand unfold yourself.\n"
    )


def test_the_corpus_has_38_plays_split_by_play(plays: dict[str, str]) -> None:
    assert len(plays) == 38
    corpus = shakespeare_corpus("full")
    assert len(corpus.train) > 4_000_000
    assert "To be, or not to be" in corpus.test and "To be, or not to be" not in corpus.train
    for name in (*VALIDATION_PLAYS, *TEST_PLAYS):
        assert plays[name][:2000] not in corpus.train
    assert not set("*_#\\") & set(corpus.train)
    assert "HAMLET:\n" in corpus.test


def test_vocabulary_round_trip_and_unknown_characters() -> None:
    vocabulary = Vocabulary.from_text("to be or not")
    text = "not to be"
    assert vocabulary.decode(vocabulary.encode(text)) == text
    assert vocabulary.encode("bz").tolist()[1] == 0
    assert vocabulary.unknown_in("bzq!") == "!qz"
    assert len(vocabulary) == len(set("to be or not")) + 1


def test_unigram_baseline_matches_a_numpy_computation() -> None:
    train_text, text = "aaab bc", "abca"
    vocabulary = Vocabulary.from_text(train_text)
    counts = np.ones(len(vocabulary))
    for character in train_text:
        counts[vocabulary.index[character]] += 1
    probabilities = counts / counts.sum()
    expected = -np.mean([np.log2(probabilities[vocabulary.index.get(c, 0)]) for c in text])
    assert unigram_bits_per_character(train_text, text, vocabulary) == pytest.approx(expected)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bits_per_character_reads_each_piece_with_its_whole_context(cell: str) -> None:
    # The oracle reads each piece in one call from a zero state; bits_per_character reads the pieces
    # side by side, window by window, carrying the state, and the 2 characters left over continue
    # the last piece.
    torch.manual_seed(0)
    model = CharLM(CharLMConfig("abcdefgh", cell=cell, hidden_size=12, embedding_size=5)).eval()
    with torch.no_grad():  # larger weights, so that the state carries enough to tell a reset apart
        for parameter in model.parameters():
            parameter.mul_(4)
    ids = torch.randint(1, 9, (103,))
    pieces, length, total = 4, 25, 0.0  # 102 predictions: 4 pieces of 25, and 2 more
    with torch.no_grad():
        for piece in range(pieces):
            text = ids[piece * length : (piece + 1) * length + 1] if piece < pieces - 1 else ids[piece * length :]
            logits, _ = model(text[None, :-1])
            total += F.cross_entropy(logits[0], text[1:], reduction="sum").item()
    expected = total / 102 / math.log(2)
    assert bits_per_character(model, ids, window=10, streams=pieces) == pytest.approx(expected, rel=1e-5)


def test_bits_per_character_of_a_text_shorter_than_a_window_reads_it_whole() -> None:
    torch.manual_seed(0)
    model = CharLM(CharLMConfig("abcdefgh", hidden_size=12, embedding_size=5)).eval()
    ids = torch.randint(1, 9, (40,))
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        expected = F.cross_entropy(logits[0], ids[1:]).item() / math.log(2)
    assert bits_per_character(model, ids, window=256) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 characters"):
        bits_per_character(model, ids[:1])


def test_a_short_run_beats_the_unigram_baseline_on_unseen_plays(tmp_path: Path) -> None:
    data, model_fields, config = configure(
        "full",
        ["hidden_size=96", "embedding_size=16", "seq_len=48", "eval_chars=20000", "lr=0.01"],
        max_steps=150, progress=False,
    )  # fmt: skip
    config.eval_every, config.batch_size, config.warmup_steps = 75, 32, 5
    model, result, figures = train(data, model_fields, config, tmp_path)
    assert result.steps == 150
    assert figures["val_bpc"] < figures["unigram_bpc"] - 0.3, figures
    assert (tmp_path / "curves.png").exists() and (tmp_path / "model.safetensors").exists()


def test_generation_is_seeded_never_unknown_and_greedy_at_top_k_1() -> None:
    torch.manual_seed(0)
    model = CharLM(CharLMConfig("abcdef", hidden_size=16, embedding_size=4)).eval()
    first = "".join(generate(model, "abc", 40, generator=torch.Generator().manual_seed(3)))
    again = "".join(generate(model, "abc", 40, generator=torch.Generator().manual_seed(3)))
    assert first == again and len(first) == 40 and set(first) <= set("abcdef")
    greedy = "".join(generate(model, "ab?", 10, top_k=1))
    ids, expected = model.vocabulary.encode("ab?"), []
    with torch.no_grad():
        for _ in range(10):
            logits, _ = model(ids[None])
            scores = logits[0, -1].clone()
            scores[0] = -math.inf
            expected.append(int(scores.argmax()))
            ids = torch.cat([ids, torch.tensor(expected[-1:])])
    assert greedy == model.vocabulary.decode(expected)
    with pytest.raises(ValueError, match="temperature must be positive"):
        next(generate(model, "a", 1, temperature=0))


def test_next_characters_are_the_softmax_of_a_step_by_step_run() -> None:
    torch.manual_seed(0)
    model = CharLM(CharLMConfig("abcdef", hidden_size=16, embedding_size=4)).eval()
    state = None
    with torch.no_grad():  # the prompt fed one character at a time, carrying the state
        for i in model.vocabulary.encode("cab?").tolist():
            logits, state = model(torch.tensor([[i]]), state)
    expected = F.softmax(logits[0, -1].double(), dim=-1)[1:]
    listed = next_characters(model, "cab?", k=3)
    assert len(listed) == 3 and [p for _, p in listed] == sorted((p for _, p in listed), reverse=True)
    for character, probability in listed:
        assert probability == pytest.approx(float(expected["abcdef".index(character)]), abs=1e-6)
    assert {c for c, _ in next_characters(model, "a", k=100)} == set("abcdef")  # all, never the unknown one
    with pytest.raises(ValueError, match="the prompt is empty"):
        next_characters(model, "")


def test_text_files_are_checked(tmp_path: Path) -> None:
    """A corpus file's problems are CorpusErrors (every kind of problem: tests/tasks/test_common.py)."""
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\x00\x01\x02abc")
    with pytest.raises(CorpusError, match=r"data.bin, line 1: a NUL byte \(a binary file\?\)"):
        read_text_file(binary)
    with pytest.raises(CorpusError, match="missing.txt: no such file"):
        read_text_file(tmp_path / "missing.txt")


def test_command_line_train_generate_evaluate(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["charlm", "train", "--preset", "sentence", "--out", str(out), "--quiet",
                                 "--max-steps", "40", "--sample", "30"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "bits per character" in result.output and "a generated passage" in result.output
    result = runner.invoke(app, ["charlm", "generate", "--checkpoint", str(out), "--prompt", "To be", "--length", "25"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("To be") and len(result.output.strip()) >= 25
    result = runner.invoke(app, ["charlm", "evaluate", "--checkpoint", str(out), "--split", "test"])
    assert result.exit_code == 0 and "test:" in result.output, result.output
    result = runner.invoke(app, ["charlm", "predict", "To be, or not to b", "--checkpoint", str(out), "--top-k", "3"])
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 3, result.output


def test_command_line_trains_on_a_user_text_file(tmp_path: Path) -> None:
    text = tmp_path / "song.txt"
    text.write_text("la la la, sing a song of sixpence, a pocket full of rye.\n" * 20)
    result = runner.invoke(app, ["charlm", "train", "--preset", "sentence", "--corpus", str(text), "--quiet",
                                 "--out", str(tmp_path / "run"), "--max-steps", "20", "--sample", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--set", "hidden_size=big"], "hidden_size: expected an integer, got 'big'"),
        (["train", "--set", "characters=abc"], "--set characters=...: the characters come from the training text"),
        (["train", "--corpus", "/nonexistent/file.txt"], "no such file"),
        (["generate", "--checkpoint", "/nonexistent"], "no config.json"),
        (["predict", "", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_command_line_errors_are_clear(arguments: list[str], message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # train's default --out, runs/charlm, may hold make run's run in the project
    assert_clear_error(["charlm", *arguments], message)


def test_generate_refuses_a_checkpoint_of_another_task(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"format": "lstmkit-pretrained/1", "task": "pairs", "config": {}}')
    result = runner.invoke(app, ["charlm", "generate", "--checkpoint", str(tmp_path)])
    assert result.exit_code == 2 and "task 'pairs', expected 'charlm'" in result.output


def test_command_line_trains_in_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    arguments = ["charlm", "train", "--preset", "sentence", "--max-steps", "10", "--sample", "0"]
    _, records = train_in_two_processes(arguments, out)
    assert CharLM.from_pretrained(out).config.hidden_size == 64
    assert len([line for line in records if '"train"' in line]) == 1, "only rank 0 writes the metrics"


def test_torchrun_trains_in_two_processes_and_leaves_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "lstmkit", "charlm", "train", "--preset", "sentence", "--max-steps", "10", "--sample", "0",
               "--out", str(out), "--quiet"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "terminate called" not in result.stderr, "a process aborted at exit"
    assert result.stdout.count("stopped after 10 steps") == 1, "only rank 0 reports"
    assert CharLM.from_pretrained(out).config.hidden_size == 64


def _dtypes(path: Path) -> set[torch.dtype]:
    """The dtypes of the tensors of a safetensors file (the random state, bytes, left out)."""
    return {tensor.dtype for name, tensor in load_file(str(path)).items() if name != "rng.torch"}


def small_corpus(folder: Path) -> Path:
    """A text file of a few lines: quicker to read than the plays behind the ``sentence`` preset."""
    path = folder / "small.txt"
    path.write_text("To be, or not to be: that is the question.\n" * 6)
    return path


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_at_a_precision_records_it_and_keeps_float32_weights(precision: str, tmp_path: Path) -> None:
    out = tmp_path / precision
    result = runner.invoke(app, ["charlm", "train", "--preset", "sentence", "--out", str(out), "--quiet",
                                 "--corpus", str(small_corpus(tmp_path)), "--max-steps", "6", "--sample", "5",
                                 "--precision", precision])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"precision {precision} (CPU: {detect_cpu().description})" in flat(result.output)
    assert read_checkpoint(out / "checkpoint.safetensors")["train_config"]["precision"] == precision
    assert _dtypes(out / "model.safetensors") == _dtypes(out / "checkpoint.safetensors") == {torch.float32}
    for command in (["evaluate"], ["generate", "--length", "5"], ["predict", "To b"]):
        result = runner.invoke(app, ["charlm", *command, "-c", str(out), "--precision", precision])
        assert result.exit_code == 0, result.output


def test_auto_precision_is_what_the_cpu_offers(tmp_path: Path) -> None:
    result = runner.invoke(app, ["charlm", "train", "--preset", "sentence", "--out", str(tmp_path), "--quiet",
                                 "--max-steps", "2", "--sample", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    recorded = read_checkpoint(tmp_path / "checkpoint.safetensors")["train_config"]["precision"]
    assert recorded == resolve_precision("auto")


@pytest.mark.parametrize("command", [["train"], ["evaluate"], ["generate"], ["predict", "To b"]])
def test_an_unknown_precision_is_one_line_and_exit_code_2(command: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["charlm", *command, "--precision", "fp16", *(["--out", str(tmp_path)] *
                                                                           (command == ["train"]))])  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2
    assert lines == ["error: unknown precision 'fp16': expected auto, bf16 or fp32"], result.stderr


def test_training_into_a_log_file_shows_its_progress_in_plain_lines(tmp_path: Path) -> None:
    """CliRunner's stdout is not a terminal, as in ``lstmkit charlm train > log``."""
    arguments = ["charlm", "train", "--preset", "sentence", "--corpus", str(small_corpus(tmp_path)), "--max-steps", "4",
                 "--sample", "0", "--out"]  # fmt: skip
    result = runner.invoke(app, [*arguments, str(tmp_path / "shown")])
    assert result.exit_code == 0, result.output
    assert re.search(r"^epoch 1/\d+, step 4/4: loss \d\.\d{4}, .*elapsed 0:00:\d\d, eta 0:00:00$",
                     result.stdout, re.MULTILINE), result.stdout  # fmt: skip
    quiet = runner.invoke(app, [*arguments, str(tmp_path / "quiet"), "--quiet"])
    assert quiet.exit_code == 0 and "step 4/4" not in quiet.stdout, quiet.stdout


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "11", "0.001"])
def test_a_temperature_must_be_a_finite_positive_number(value: str) -> None:
    result = runner.invoke(app, ["charlm", "generate", "--checkpoint", "/nonexistent", "--temperature", value])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert (f"error: Invalid value for '--temperature': must be a finite positive number from 0.01 to 10, got "
            f"{float(value)}") in result.stderr  # fmt: skip


def test_evaluate_on_a_text_file_says_which_part_it_scores(tmp_path: Path) -> None:
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(100))
    (tmp_path / "text.txt").write_text(text)
    CharLM(CharLMConfig("abcdefghijklmnopqrstuvwxyz ", hidden_size=4, embedding_size=2)).save_pretrained(tmp_path)
    start = int(len(text) * 0.95)  # the last 5% follow this many characters
    expected = {
        "test": f"over {len(text) - start:,} characters, the last 5% of {tmp_path / 'text.txt'} (characters "
                f"{start + 1:,}-{len(text):,} of {len(text):,})",
        "train": "characters, the first 90% of",
    }  # fmt: skip
    for split, words in expected.items():
        result = runner.invoke(app, ["charlm", "evaluate", "-c", str(tmp_path), "--corpus", str(tmp_path / "text.txt"),
                                     "--split", split])  # fmt: skip
        assert result.exit_code == 0 and words in flat(result.output), result.output
    help_text = flat(runner.invoke(app, ["charlm", "evaluate", "--help"], env={"COLUMNS": "200"}).output)
    assert "--split test scores its last 5%" in help_text


@pytest.mark.parametrize(("cell", "gate"), [("lstm", 1), ("peephole", 1), ("layernorm", 1), ("gru", 1)])
def test_forget_bias_sets_the_forget_gate_and_survives_saving(cell: str, gate: int, tmp_path: Path) -> None:
    _, model_fields, _ = configure("sentence", [f"cell={cell}", "forget_bias=1.5", "hidden_size=6"])
    assert model_fields["forget_bias"] == 1.5
    model = CharLM(CharLMConfig("abc", **model_fields))
    layer = model.rnn
    total = layer.bias_ih_l0 + layer.bias_hh_l0  # the f block (LSTMs: i, f, g, o; GRU: r, z, n)
    assert total[gate * 6 : (gate + 1) * 6].tolist() == [1.5] * 6
    assert not torch.allclose(total[:6], torch.full((6,), 1.5))  # the other gates keep their draws
    model.save_pretrained(tmp_path)
    loaded = CharLM.from_pretrained(tmp_path)
    assert loaded.config.forget_bias == 1.5 and loaded.rnn.cells[0].gate_init.forget_bias == 1.5


def test_without_forget_bias_the_model_draws_as_before() -> None:
    torch.manual_seed(0)
    plain = CharLM(CharLMConfig("abc", hidden_size=6, embedding_size=2))
    torch.manual_seed(0)
    torch.nn.Embedding(4, 2)  # the model's draws: the embedding first, then the layer, as torch.nn.LSTM's
    reference = torch.nn.LSTM(2, 6, batch_first=True)
    assert plain.config.forget_bias is None
    for name, value in reference.state_dict().items():
        assert torch.equal(plain.rnn.state_dict()[name], value), name


@pytest.mark.parametrize(("override", "message"), [
    (["cell=rnn", "forget_bias=1"], "forget_bias needs a forget gate; the plain rnn cell has none"),
    (["forget_bias=nan"], "forget_bias: expected a finite number"),
])  # fmt: skip
def test_forget_bias_is_refused_where_it_cannot_apply(override: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        configure("sentence", override)


def test_dropout_drops_units_of_the_embedding_and_the_output_in_training_only() -> None:
    """Oracle: the same model's layers called by hand, with the training call's dropout masks recovered
    from a seeded re-draw (F.dropout in the same order: the embedding's output, then the layer's)."""
    torch.manual_seed(0)
    model = CharLM(CharLMConfig("abcdef", hidden_size=12, embedding_size=8, dropout=0.3))
    ids = torch.randint(1, 7, (3, 9))
    model.train()
    torch.manual_seed(5)
    logits, _ = model(ids)
    torch.manual_seed(5)
    embedded = F.dropout(model.embedding(ids), 0.3, training=True)
    output, _ = model.rnn(embedded)
    want = model.head(F.dropout(output, 0.3, training=True))
    torch.testing.assert_close(logits, want)
    assert not torch.allclose(logits, model.head(model.rnn(model.embedding(ids))[0]))  # something was dropped
    model.eval()
    torch.testing.assert_close(model(ids)[0], model.head(model.rnn(model.embedding(ids))[0]))


def test_dropout_with_one_layer_is_not_refused_as_useless_and_bad_rates_are() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layer's "dropout has no effect with num_layers=1" warning
        CharLM(CharLMConfig("ab", hidden_size=4, embedding_size=2, dropout=0.2))
    two = CharLM(CharLMConfig("ab", hidden_size=4, embedding_size=2, num_layers=2, dropout=0.2))
    assert two.rnn.dropout == 0.2  # between the layers too
    for rate in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="dropout must be a number in"):
            CharLMConfig("ab", dropout=rate)
