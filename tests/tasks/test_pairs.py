"""Sentence pairs: the Bible verse pairs (balanced, no verse in two parts), the Quora TSV reader
(every malformed file named with its line), the tokenizer and vocabulary, padding that never reaches
the logits (siamese and single), metrics and the threshold against scikit-learn, training that beats
the majority class, checkpoints, --resume bit for bit, and the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
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
from lstmkit.tasks.files import skipped_notes
from lstmkit.tasks.pairs import task as pairs_task
from lstmkit.tasks.pairs.data import (
    PairsDataError,
    PairSet,
    Vocabulary,
    bible_verses,
    chapter_split,
    read_quora_tsv,
    tokenize,
    verse_pairs,
)
from lstmkit.tasks.pairs.model import (
    PairClassifier,
    PairsConfig,
    accuracy_and_f1,
    choose_threshold,
    join_pairs,
    roc_auc,
)
from lstmkit.tasks.pairs.task import PairsData, configure, encode_pairs, load_splits, train

metrics = pytest.importorskip("sklearn.metrics")
HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PairClassifier, dict]:
    """The tiny preset trained once on the Bible pairs (seconds)."""
    out = tmp_path_factory.mktemp("tiny")
    model, result, evaluations = train_tiny(configure, train, out)
    assert result.steps == 75
    return out, model, evaluations


def logits_one_by_one(model: PairClassifier, pairs: PairSet) -> torch.Tensor:
    """Logits of every pair fed on its own: no padding anywhere."""
    with torch.no_grad():
        model.eval()
        encoded = encode_pairs(model.vocabulary, pairs)
        return torch.cat([model(a[None], torch.tensor([len(a)]), b[None], torch.tensor([len(b)])) for a, b in encoded])


def one_by_one(model: PairClassifier, pairs: PairSet) -> torch.Tensor:
    """Probabilities of every pair fed on its own."""
    return torch.sigmoid(logits_one_by_one(model, pairs))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def synthetic_quora(count: int, seed: int) -> str:
    """Questions about one of 24 topics; a duplicate asks about the same topic in other words."""
    topics = ["python", "piano", "chess", "french", "tennis", "cooking", "painting", "running", "guitar", "rust",
              "swimming", "calculus", "poetry", "sailing", "baking", "knitting", "german", "drawing", "judo",
              "surfing", "physics", "dancing", "singing", "juggling"]  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    rows = [HEADER]
    for index in range(count):
        topic, other = (topics[int(i)] for i in torch.randperm(len(topics), generator=generator)[:2])
        label = index % 2
        second = f"What is the best way to get good at {topic if label else other}?"
        rows.append(f"{index}\t{2 * index}\t{2 * index + 1}\tHow do I learn {topic}?\t{second}\t{label}\n")
    return "".join(rows)


# -- data -----------------------------------------------------------------------------------------
def test_tokenizer_and_vocabulary_by_hand() -> None:
    assert tokenize("What's 2+2?  ÉCOLE") == ["what", "'", "s", "2", "+", "2", "?", "école"]
    vocabulary = Vocabulary.from_texts(["b a b", "c b a ."], min_count=2)
    assert vocabulary.words == ["b", "a"], "by count, then alphabetically; c and . are seen once"
    assert len(vocabulary) == 5 and (vocabulary.pad, vocabulary.unknown, vocabulary.separator) == (0, 1, 2)
    assert vocabulary.encode("A b c").tolist() == [4, 3, 1]
    assert vocabulary.unknown_in("c a c d") == ["c", "d"]
    assert Vocabulary.from_texts(["<pad> x"]).words == ["<", ">", "pad", "x"], "specials never come from text"
    with pytest.raises(ValueError, match="min_count must be at least 1"):
        Vocabulary.from_texts(["a"], min_count=0)


def test_bible_verses_are_aligned_translations() -> None:
    verses = bible_verses()
    assert len(verses) == 31_099 and bible_verses() is verses, "read once per process"
    by_name = {verse.name: verse for verse in verses}
    assert by_name["John 11:35"].kjv == by_name["John 11:35"].web == "Jesus wept."
    genesis = by_name["Genesis 1:2"]
    assert "darkness was upon the face of the deep" in genesis.kjv, "the KJV's [italic] brackets are removed"
    assert genesis.web.startswith("Now the earth was formless and empty.")
    assert by_name["Psalms 23:1"].web == "Yahweh is my shepherd: I shall lack nothing."
    assert not any("[" in v.kjv or "`" in v.web for v in verses)


def test_bible_parts_are_whole_chapters_and_pairs_are_balanced() -> None:
    verses = bible_verses()
    parts = chapter_split(verses, [0.8, 0.1, 0.1], seed=0)
    assert sorted(i for part in parts for i in part) == list(range(len(verses)))
    chapters = [{verses[i].chapter for i in part} for part in parts]
    assert not (chapters[0] & chapters[1]) and not (chapters[0] & chapters[2]) and not (chapters[1] & chapters[2])
    assert [round(len(c) / 1189, 2) for c in chapters] == [0.8, 0.1, 0.1]
    pairs = verse_pairs(verses, parts[2], "test", hard_negatives=0.5, seed=1)
    assert len(pairs) == 2 * len(parts[2]) and pairs.positive_share == 0.5
    by_name = {verse.name: verse for verse in verses}
    test_web = {verses[i].web for i in parts[2]}
    same_chapter = 0
    for name, first, second, label in zip(pairs.ids, pairs.first, pairs.second, pairs.labels, strict=True):
        own, other = (by_name[side] for side in name.split(" ~ "))
        assert first == own.kjv and second == other.web and second in test_web, "nothing from other parts"
        assert (own.name == other.name) == bool(label) and (label or second != own.web)
        same_chapter += not label and own.chapter == other.chapter
    assert 0.45 < same_chapter / len(parts[2]) < 0.56, "about half the negatives from the same chapter"
    capped = verse_pairs(verses, parts[2], "test", max_pairs=100, seed=1)
    assert len(capped) == 100 and capped.positive_share == 0.5


def test_splits_follow_the_caps_and_the_seed() -> None:
    splits = load_splits(PairsData(max_train_pairs=600, max_eval_pairs=200))
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [600, 200, 200]
    verse = re.compile(r"^(.*) ~ ")
    names = [{verse.match(i)[1].rsplit(":", 1)[0] for i in splits[n].ids} for n in ("train", "validation", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2]), "chapters stay in one part"
    again = load_splits(PairsData(max_train_pairs=600, max_eval_pairs=200))
    assert again["test"].ids == splits["test"].ids and again["test"].second == splits["test"].second
    assert (
        load_splits(PairsData(max_train_pairs=600, max_eval_pairs=200, split_seed=1))["test"].ids != splits["test"].ids
    )


def test_quora_file_with_quoted_fields_blank_lines_and_a_bom(tmp_path: Path) -> None:
    text = ('\ufeff' + HEADER + '7\t1\t2\t"Is ""AI"" hype?\nReally?"\tIs AI hype?\t1\n\n'
            "9\t3\t4\tWhy is the sky blue?\tHow far is the moon?\t0\n")  # fmt: skip
    pairs = read_quora_tsv(write(tmp_path / "q.tsv", text))
    assert pairs.ids == ["7", "9"] and pairs.labels == [1, 0]
    assert pairs.first == ['Is "AI" hype?\nReally?', "Why is the sky blue?"]
    short = read_quora_tsv(write(tmp_path / "short.tsv", "question2\tis_duplicate\tquestion1\nb\t0\ta\n"))
    assert (short.ids, short.first, short.second) == (["0"], ["a"], ["b"]), "only the three columns are required"


MALFORMED = [
    ("empty.tsv", "", r"empty.tsv: the file is empty; expected a header \(id\tqid1"),
    ("blank.tsv", "\n \n", r"blank.tsv: the file is empty"),
    ("header.tsv", HEADER, r"header.tsv: a header but no pairs"),
    ("nolabel.tsv", "id\tquestion1\tquestion2\n1\ta\tb\n",
     r"nolabel.tsv, line 1: missing column\(s\) \['is_duplicate'\]; expected the Quora Question Pairs header"),
    ("comma.tsv", "id,qid1,qid2,question1,question2,is_duplicate\n1,1,2,a,b,0\n",
     r"comma.tsv, line 1: missing column\(s\) \['question1', 'question2', 'is_duplicate'\]"),
    ("twice.tsv", "question1\tquestion2\tis_duplicate\tquestion1\na\tb\t1\tc\n",
     r"twice.tsv, line 1: duplicated columns \['question1'\]"),
    ("two.tsv", HEADER + "1\t1\t2\ta\tb\t0\n2\t3\t4\tc\td\t2\n",
     r"two.tsv, line 3, column 'is_duplicate': expected 0 or 1, got '2'"),
    ("word.tsv", HEADER + "1\t1\t2\ta\tb\tyes\n", r"word.tsv, line 2, column 'is_duplicate': .* got 'yes'"),
    ("nolabelvalue.tsv", HEADER + "1\t1\t2\ta\tb\t\n", r"nolabelvalue.tsv, line 2, column 'is_duplicate'.*got ''"),
    ("fields.tsv", HEADER + "1\t1\t2\ta b\t0\n", r"fields.tsv, line 2: 5 fields, expected 6 \(tab-separated\)"),
    ("emptyq.tsv", HEADER + "1\t1\t2\ta\tb\t0\n2\t3\t4\t\tb\t1\n",
     r"emptyq.tsv, line 3: empty question1; every pair needs two questions \(--skip-bad-rows .*--set drop_empty=true"),
    ("spaces.tsv", HEADER + "1\t1\t2\t  \t \t1\n", r"spaces.tsv, line 2: empty question1 and question2"),
    ("quote.tsv", HEADER + '1\t1\t2\t"a"b\tc\t0\n', r"quote.tsv, line 2: .*; expected tab-separated fields"),
    ("multiline.tsv", HEADER + '1\t1\t2\t"a\nb"\tc\t0\n2\t1\t2\ta\tc\t5\n',
     r"multiline.tsv, line 4, column 'is_duplicate': expected 0 or 1, got '5'"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_quora_files_are_named_with_their_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(PairsDataError, match=message):
        read_quora_tsv(write(tmp_path / name, content))


def test_other_unusable_files_and_pair_sets(tmp_path: Path) -> None:
    with pytest.raises(PairsDataError, match="missing.tsv: no such file"):
        read_quora_tsv(tmp_path / "missing.tsv")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes((HEADER + "1\t1\t2\tcaf\xe9?\tb\t0\n").encode("latin-1"))
    with pytest.raises(PairsDataError, match=r"latin.tsv, line 2: not valid UTF-8 .*expected a UTF-8 text file"):
        read_quora_tsv(latin)
    binary = tmp_path / "binary.tsv"
    binary.write_bytes((HEADER + "1\t1\t2\ta\x00\tb\t0\n").encode())
    with pytest.raises(PairsDataError, match=r"binary.tsv, line 2: a NUL byte"):
        read_quora_tsv(binary)
    holes = write(tmp_path / "holes.tsv", HEADER + "1\t1\t2\ta\t\t0\n2\t1\t2\tb\tc\t1\n3\t1\t2\t\td\t0\n")
    kept = read_quora_tsv(holes, drop_empty=True)
    assert kept.ids == ["2"] and kept.skipped == [
        f"{holes}, line 2: empty question2; every pair needs two questions",
        f"{holes}, line 4: empty question1; every pair needs two questions",
    ]
    with pytest.raises(PairsDataError, match="memory: pair 'p' has an empty sentence"):
        PairSet(["p"], ["a"], ["  "], [1], "memory")
    with pytest.raises(PairsDataError, match=r"memory: labels must be 0 or 1, got \[2\]"):
        PairSet(["p"], ["a"], ["b"], [2], "memory")
    ones = write(tmp_path / "ones.tsv", HEADER + "".join(f"{i}\t1\t2\ta{i}\tb\t1\n" for i in range(20)))
    with pytest.raises(ValueError, match="every pair has is_duplicate=1; need both 0 and 1"):
        load_splits(PairsData(dataset=str(ones)))
    few = write(tmp_path / "few.tsv", HEADER + "1\t1\t2\ta\tb\t1\n2\t1\t2\ta\tc\t0\n")
    with pytest.raises(ValueError, match="few.tsv: 2 pairs; need at least 10"):
        load_splits(PairsData(dataset=str(few)))
    lopsided = write(tmp_path / "lop.tsv", HEADER + "".join(f"{i}\t1\t2\ta{i}\tb\t{int(i == 0)}\n" for i in range(10)))
    with pytest.raises(ValueError, match=r"lop.tsv \((validation|test) part\): only one label among \d+ pairs"):
        load_splits(PairsData(dataset=str(lopsided)))


BAD_ROWS = ["x7\t1\t2\tonly three", "x8\t1\t2\ta question\tanother\tmaybe", "x9\t1\t2\t  \tb\t1"]
WHY = ["4 fields, expected 6 (tab-separated)", "column 'is_duplicate': expected 0 or 1, got 'maybe'",
       "empty question1; every pair needs two questions"]  # fmt: skip


def with_bad_rows(path: Path, good: int, bad: list[str] = BAD_ROWS) -> Path:
    """A file of ``good`` distinct pairs with the ``bad`` rows after the third (from line 5 on)."""
    rows = distinct_pairs(0, good).splitlines(True)
    return write(path, HEADER + "".join(rows[:3]) + "".join(row + "\n" for row in bad) + "".join(rows[3:]))


def test_bad_rows_stop_the_reading_unless_skipped_and_then_each_is_named(tmp_path: Path) -> None:
    path = with_bad_rows(tmp_path / "bad.tsv", 12)
    with pytest.raises(PairsDataError, match=r"bad.tsv, line 5: 4 fields, expected 6 \(tab-separated\) \(--skip-bad"):
        read_quora_tsv(path)
    with pytest.raises(PairsDataError, match="line 5: 4 fields"):
        read_quora_tsv(path, drop_empty=True)
    kept = read_quora_tsv(path, skip_bad_rows=True)
    assert len(kept) == 12 and not {"x7", "x8", "x9"} & set(kept.ids)
    assert kept.skipped == [f"{path}, line 5: {WHY[0]}", f"{path}, line 6, {WHY[1]}", f"{path}, line 7: {WHY[2]}"]
    assert skipped_notes(kept.skipped)[-1] == "3 rows left out"
    many = [f"f.tsv, line {line}: why" for line in range(30)]
    assert skipped_notes(many)[-2:] == ["left out f.tsv, line 19: why", "30 rows left out (10 not listed)"]


@pytest.mark.parametrize(
    ("option", "bad", "expected"),
    [
        (["--skip-bad-rows"], BAD_ROWS, [f"line 5: {WHY[0]}", f"line 6, {WHY[1]}", f"line 7: {WHY[2]}"]),
        (["--set", "drop_empty=true"], BAD_ROWS[2:], [f"line 5: {WHY[2]}"]),
    ],
    ids=["--skip-bad-rows", "drop_empty"],
)
def test_training_names_the_rows_it_left_out(option: list[str], bad: list[str], expected: list[str],
                                             tmp_path: Path) -> None:  # fmt: skip
    path = with_bad_rows(tmp_path / "bad.tsv", 200, bad)
    out = tmp_path / "run"
    result = runner.invoke(app, ["pairs", "train", "--preset", "tiny", "--data", str(path), "--out", str(out),
                                 "--quiet", "--max-steps", "1", "--set", "min_count=1", *option])  # fmt: skip
    assert result.exit_code == 0, result.output
    notes = flat(result.stdout).split("note: ")[1:]
    assert [note.strip() for note in notes[:-1]] == [f"left out {path}, {where}" for where in expected]
    assert notes[-1].startswith(f"{len(expected)} row{'s' * (len(expected) > 1)} left out"), notes
    recorded = json.loads((out / "task.json").read_text())["data"]
    assert recorded["skip_bad_rows"] == (option == ["--skip-bad-rows"])


def distinct_pairs(start: int, stop: int) -> str:
    """Rows of pairs no two alike, labelled 0 and 1 in turn."""
    return "".join(f"{i}\t1\t2\tHow do I learn skill {i}?\tHow to get good at skill {i + i % 2}?\t{1 - i % 2}\n"
                   for i in range(start, stop))  # fmt: skip


def split_ids(path: Path, **settings: object) -> dict[str, set[str]]:
    return {name: set(pairs.ids) for name, pairs in load_splits(PairsData(dataset=str(path), **settings)).items()}


def test_rows_appended_or_reordered_never_move_a_pair_to_another_split(tmp_path: Path) -> None:
    rows = distinct_pairs(0, 300)
    before = split_ids(write(tmp_path / "pairs.tsv", HEADER + rows))
    assert all(20 <= len(before[name]) <= 45 for name in ("validation", "test")), {k: len(v) for k, v in before.items()}
    after = split_ids(write(tmp_path / "longer.tsv", HEADER + rows + distinct_pairs(300, 400)))
    assert all(before[name] <= after[name] for name in before), "every pair stays where it was"
    assert sum(map(len, after.values())) == 400
    reordered = split_ids(write(tmp_path / "reordered.tsv", HEADER + "".join(reversed(rows.splitlines(True)))))
    assert reordered == before
    other_seed = split_ids(tmp_path / "pairs.tsv", split_seed=1)
    assert other_seed["test"] != before["test"]
    copies = write(tmp_path / "copies.tsv", HEADER + rows + "".join(
        f"c{i}\t1\t2\tHow to get good at skill {i + i % 2}?\tHOW do I learn skill {i} ?\t{1 - i % 2}\n"
        for i in range(300)))  # fmt: skip
    for name, ids in split_ids(copies).items():
        assert {f"c{i}" for i in ids if not i.startswith("c")} == {i for i in ids if i.startswith("c")}, (
            f"a pair and its swapped copy are in the same split ({name})"
        )


def test_evaluate_warns_when_the_data_changed_since_training(tmp_path: Path) -> None:
    data = write(tmp_path / "pairs.tsv", HEADER + distinct_pairs(0, 120))
    counts = {name: len(pairs) for name, pairs in load_splits(PairsData(dataset=str(data))).items()}
    assert_evaluate_warns_once_the_data_changed("pairs", data, tmp_path / "run", ["--set", "min_count=1"], counts,
                                                "test", distinct_pairs(120, 121))  # fmt: skip


# -- model ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("architecture", "cell"), [("siamese", "lstm"), ("single", "lstm"), ("siamese", "gru")])
def test_padding_never_reaches_the_logits(architecture: str, cell: str) -> None:
    words = [f"w{i}" for i in range(20)]
    model = PairClassifier(PairsConfig(words, architecture=architecture, cell=cell, embedding_size=6,
                                       hidden_sizes=[5, 4], dense_size=7))  # fmt: skip
    texts = [("w1 w2 w3", "w4"), ("w5", "w6 w7 w8 w9 w10 w11"), ("w1 w1", "w2 w3"), ("w12 w13 w14 w15", "w16")]
    pairs = PairSet(["a", "b", "c", "d"], [t[0] for t in texts], [t[1] for t in texts], [1, 0, 1, 0], "memory")
    reference = logits_one_by_one(model, pairs)
    encoded = encode_pairs(model.vocabulary, pairs)
    a = torch.randint(3, 23, (4, 9))  # real words as padding: they must be ignored
    b = torch.randint(3, 23, (4, 8))
    for row, (first, second) in enumerate(encoded):
        a[row, : len(first)], b[row, : len(second)] = first, second
    a_lengths, b_lengths = torch.tensor([len(x) for x, _ in encoded]), torch.tensor([len(y) for _, y in encoded])
    for mode in (model.eval, lambda: model.train().head[2].eval()):  # inference and training engines, no dropout
        mode()
        assert torch.allclose(model(a, a_lengths, b, b_lengths), reference, atol=1e-5)
    with torch.no_grad():
        ignoring = model.eval()(a, torch.full((4,), 9), b, torch.full((4,), 8))
    assert not torch.allclose(ignoring, reference, atol=1e-3), "the control must see the padding"
    with pytest.raises(ValueError, match="every sentence needs at least one word"):
        model(a, torch.tensor([3, 0, 1, 1]), b, b_lengths)


def test_single_architecture_reads_a_separator_joined_sequence() -> None:
    model = PairClassifier(PairsConfig(["x", "y", "z"], architecture="single", hidden_sizes=[4], embedding_size=3))
    model.eval()
    a, a_lengths = torch.tensor([[3, 4, 5], [5, 0, 0]]), torch.tensor([3, 1])
    b, b_lengths = torch.tensor([[4, 0], [3, 3]]), torch.tensor([1, 2])
    joined, lengths = join_pairs(a, a_lengths, b, b_lengths)
    assert joined.tolist() == [[3, 4, 5, 2, 4, 0], [5, 2, 3, 3, 0, 0]] and lengths.tolist() == [5, 4]
    with torch.no_grad():
        by_hand = [model.head(model.encode(torch.tensor([ids]), torch.tensor([len(ids)]))) for ids in
                   ([3, 4, 5, 2, 4], [5, 2, 3, 3])]  # fmt: skip
        assert torch.allclose(model(a, a_lengths, b, b_lengths), torch.cat(by_hand).squeeze(1), atol=1e-6)
    siamese = PairClassifier(PairsConfig(["x"], hidden_sizes=[4, 3]))
    assert siamese.head[0].in_features == 4 * 6 and model.head[0].in_features == 8


def test_bad_model_settings_are_refused() -> None:
    for fields, message in [({"architecture": "triple"}, "unknown architecture 'triple'"),
                            ({"cell": "transformer"}, "unknown cell 'transformer'"),
                            ({"hidden_sizes": []}, "at least one hidden size"),
                            ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
                            ({"threshold": 1.5}, r"threshold must be a number in \[0, 1\], got 1.5")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            PairsConfig(["a"], **fields)


def test_metrics_and_threshold_match_scikit_learn() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (300,), generator=generator)
    scores = ((labels + torch.randn(300, generator=generator)) * 4).round() / 16 + 0.3  # many ties
    scores = scores.clamp(0, 1)
    assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    for threshold in (0.2, 0.5, 0.61):
        predicted = (scores >= threshold).int()
        accuracy, f1 = accuracy_and_f1(labels, scores, threshold)
        assert accuracy == pytest.approx(metrics.accuracy_score(labels, predicted))
        assert f1 == pytest.approx(metrics.f1_score(labels, predicted, zero_division=0))
    values = sorted(set(scores.tolist()))
    candidates = [values[0] / 2, *((x + y) / 2 for x, y in zip(values, values[1:], strict=False)), (values[-1] + 1) / 2]
    for metric, score in (("accuracy", metrics.accuracy_score), ("f1", metrics.f1_score)):
        best = max(score(labels, (scores >= t).int()) for t in candidates)
        chosen = choose_threshold(labels, scores, metric)
        assert chosen in candidates and score(labels, (scores >= chosen).int()) == pytest.approx(best)
    with pytest.raises(ValueError, match="ROC-AUC needs both classes"):
        roc_auc(torch.ones(3), torch.rand(3))
    with pytest.raises(ValueError, match="unknown threshold metric 'auc'"):
        choose_threshold(labels, scores, "auc")
    with pytest.raises(ValueError, match="labels must be 0 or 1; got 2"):
        roc_auc(torch.tensor([0, 1, 2]), torch.rand(3))
    with pytest.raises(ValueError, match="labels must be 0 or 1; got -1"):
        accuracy_and_f1(torch.tensor([0, -1, 1]), torch.rand(3), 0.5)
    with pytest.raises(ValueError, match=r"expected one score per label, shape \(3,\); got \(2,\)"):
        roc_auc(torch.tensor([0, 1, 1]), torch.rand(2))


# -- training -------------------------------------------------------------------------------------
def test_tiny_training_beats_the_majority_class_on_unseen_chapters(trained: tuple) -> None:
    out, model, evaluations = trained
    test = evaluations["test"]
    assert test.majority == 0.5 and len(test.labels) == 300
    assert test.accuracy > 0.75 and test.roc_auc > 0.85, f"tiny run: {test.accuracy:.1%}, AUC {test.roc_auc:.3f}"
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "curves.png",
                 "task.json"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "config.json").read_text())["config"]["threshold"] == model.config.threshold


def test_figures_match_an_independent_pair_by_pair_computation(trained: tuple) -> None:
    out, model, evaluations = trained
    splits = load_splits(PairsData(**json.loads((out / "task.json").read_text())["data"]))
    validation = evaluations["validation"].probabilities  # batched; the test part checks batching
    labels = torch.tensor(splits["validation"].labels)
    candidates = torch.cat((validation, torch.tensor([0.0, 1.0])))
    best = max(metrics.accuracy_score(labels, (validation >= t).int()) for t in candidates.tolist())
    threshold = model.config.threshold
    assert evaluations["validation"].threshold == evaluations["test"].threshold == threshold
    assert metrics.accuracy_score(labels, (validation >= threshold).int()) == pytest.approx(best)
    probabilities = one_by_one(model, splits["test"])
    labels = torch.tensor(splits["test"].labels)
    test = evaluations["test"]
    assert torch.allclose(test.probabilities, probabilities, atol=1e-5)
    predicted = (probabilities >= threshold).int()
    assert test.accuracy == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert test.f1 == pytest.approx(metrics.f1_score(labels, predicted))
    assert test.roc_auc == pytest.approx(metrics.roc_auc_score(labels, probabilities), abs=1e-4)
    assert test.loss == pytest.approx(metrics.log_loss(labels, probabilities), rel=1e-4)


def test_the_saved_folder_predicts_alone(trained: tuple) -> None:
    out, model, _ = trained
    loaded = PairClassifier.from_pretrained(out)
    assert loaded.config == model.config and loaded.vocabulary.words == model.vocabulary.words
    assert loaded.config.hidden_sizes == [32, 16] and not loaded.training
    splits = load_splits(PairsData(max_train_pairs=1200, min_count=3))
    assert loaded.vocabulary.words == Vocabulary.from_texts(splits["train"].first + splits["train"].second, 3).words
    some = splits["test"].subset(range(20))
    assert torch.equal(one_by_one(loaded, some), one_by_one(model, some))


def test_resume_after_a_crash_reaches_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tiny(configure, "checkpoint_every=4", "schedule=cosine", "max_train_pairs=256", "max_eval_pairs=100",
                    "hidden_sizes=[8,4]")  # fmt: skip
    assert_resume_after_crash_is_exact(train, settings, pairs_task, "bce_sum", 11, tmp_path, monkeypatch)


# -- command line ---------------------------------------------------------------------------------
def figure(output: str, name: str) -> float:
    return float(re.search(rf"{name} ([0-9.]+)", flat(output))[1])


def test_command_line_train_on_a_quora_file_then_evaluate_and_predict(tmp_path: Path) -> None:
    data = write(tmp_path / "quora.tsv", synthetic_quora(400, seed=1))
    out = tmp_path / "run"
    result = runner.invoke(app, ["pairs", "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
                                 "--quiet", "--epochs", "3", "--set", "architecture=single", "--set", "min_count=1",
                                 "--set", "threshold_metric=f1", "--precision", "fp32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "single bidirectional lstm 32->16" in flat(result.output)
    model = PairClassifier.from_pretrained(out)
    assert model.config.architecture == "single" and "juggling" in model.vocabulary.words
    test = load_splits(PairsData(dataset=str(data)))["test"]
    probabilities = one_by_one(model, test)
    predicted = (probabilities >= model.config.threshold).int()
    printed = flat(result.output[result.output.index("test:") :])  # the test figures come first
    assert figure(printed, "accuracy") == pytest.approx(100 * metrics.accuracy_score(test.labels, predicted), abs=0.05)
    assert figure(printed, "ROC-AUC") == pytest.approx(metrics.roc_auc_score(test.labels, probabilities), abs=5e-4)
    assert figure(printed, "F1") == pytest.approx(metrics.f1_score(test.labels, predicted), abs=5e-4)

    result = runner.invoke(app, ["pairs", "evaluate", "--checkpoint", str(out), "--data", str(data),
                                 "--threshold", "0.5"])  # fmt: skip
    assert result.exit_code == 0 and "over 400 pairs at threshold 0.500" in flat(result.output)
    result = runner.invoke(app, ["pairs", "evaluate", "--checkpoint", str(out), "--split", "validation"])
    assert result.exit_code == 0 and "(validation part): accuracy" in flat(result.output), result.output

    result = runner.invoke(app, ["pairs", "predict", "--checkpoint", str(out), "How do I learn chess?",
                                 "What is the best way to get good at chess?", "--precision", "fp32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    probability, decision = re.fullmatch(r"probability ([0-9.]+)\t(\w+) \(threshold [0-9.]+\)",
                                         result.output.strip()).groups()  # fmt: skip
    a, b = (
        model.vocabulary.encode("How do I learn chess?"),
        model.vocabulary.encode("What is the best way to get good at chess?"),
    )
    with torch.no_grad():
        expected = float(torch.sigmoid(model(a[None], torch.tensor([len(a)]), b[None], torch.tensor([len(b)]))))
    assert float(probability) == pytest.approx(expected, abs=5e-5)
    assert decision == ("duplicate" if expected >= model.config.threshold else "different")
    result = runner.invoke(app, ["pairs", "predict", "--checkpoint", str(out), "How do I learn zither?", "Why?"])
    assert result.exit_code == 0 and "words ['zither'] were never seen in training" in result.output


def test_command_line_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    base = ["pairs", "train", "--preset", "tiny", "--quiet", "--set", "max_train_pairs=192", "--set",
            "max_eval_pairs=100", "--set", "hidden_sizes=8,4"]  # fmt: skip
    assert_command_line_resume_is_exact(base, tmp_path, stop=5, steps=12)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--set", "hiden_sizes=3"], "unknown setting 'hiden_sizes'"),
        (["train", "--set", "words=a,b"], "the vocabulary comes from the training pairs"),
        (["train", "--set", "threshold=0.3"], "the threshold is chosen on the validation pairs"),
        (["train", "--set", "architecture=triple"], "unknown architecture 'triple'"),
        (["train", "--set", "threshold_metric=auc"], "unknown threshold_metric 'auc'"),
        (["train", "--set", "test_fraction=0.95"], "sum to less than 1"),
        (["train", "--set", "max_train_pairs=1"], "max_train_pairs must be at least 2"),
        (["train", "--data", "/nonexistent/q.tsv"], "/nonexistent/q.tsv: no such file"),
        (["predict", "a", "b", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_command_line_errors_are_clear(arguments: list[str], message: str) -> None:
    assert_clear_error(["pairs", *arguments], message)


def test_command_line_errors_with_a_trained_model(trained: tuple, tmp_path: Path) -> None:
    out = trained[0]
    result = runner.invoke(app, ["pairs", "predict", "--checkpoint", str(out), "", "b"])
    assert result.exit_code == 2 and "the first sentence '' has no words" in result.output, result.output
    result = runner.invoke(app, ["pairs", "evaluate", "--checkpoint", str(out), "--split", "dev"])
    assert result.exit_code == 2 and "unknown split 'dev'" in result.output, result.output
    bad = write(tmp_path / "bad.tsv", HEADER + "1\t1\t2\ta\tb\t0.5\n")
    result = runner.invoke(app, ["pairs", "evaluate", "--checkpoint", str(out), "--data", str(bad)])
    message = "bad.tsv, line 2, column 'is_duplicate': expected 0 or 1, got '0.5'"
    assert result.exit_code == 2 and message in flat(result.output), result.output
    holes = write(tmp_path / "holes.tsv", HEADER + "1\t1\t2\tWho is he?\t\t0\n2\t1\t2\tIn the beginning\tGod\t1\n")
    result = runner.invoke(app, ["pairs", "evaluate", "--checkpoint", str(out), "--data", str(holes)])
    assert result.exit_code == 2 and "holes.tsv, line 2: empty question2" in result.output, result.output
    result = runner.invoke(app, ["pairs", "evaluate", "--checkpoint", str(out), "--data", str(holes), "--drop-empty"])
    assert result.exit_code == 2 and "ROC-AUC needs both classes" in result.output, "one pair is left: one class"
    result = runner.invoke(app, ["pairs", "predict", "--checkpoint", str(out)])
    assert result.exit_code == 2 and "Missing argument" in result.output


@pytest.mark.parametrize("architecture", ["siamese", "single"])
def test_both_architectures_export_to_onnx_with_their_own_sequence_axes(architecture: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lstmkit.interop.onnx import export_pretrained
    from lstmkit.tasks import load_model

    model = PairClassifier(PairsConfig(["a", "b", "c"], architecture=architecture, embedding_size=4,
                                       hidden_sizes=[5, 3], dense_size=6))  # fmt: skip
    model.save_pretrained(tmp_path / "model")
    assert isinstance(load_model(tmp_path / "model"), PairClassifier)
    exported = export_pretrained(tmp_path / "model", tmp_path / "model.onnx")  # checked in onnxruntime at other sizes
    assert exported.input_names == ["a", "a_lengths", "b", "b_lengths"]
    assert exported.dynamic_axes["a"] == {0: "batch", 1: "a_sequence"} and exported.dynamic_axes["b"][1] == "b_sequence"


@pytest.mark.slow
def test_command_line_trains_in_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    arguments = ["pairs", "train", "--preset", "tiny", "--max-steps", "6", "--set", "max_eval_pairs=100"]
    output, records = train_in_two_processes(arguments, out)
    assert "test: accuracy" in output and PairClassifier.from_pretrained(out).config.threshold != 0.5
    assert len(records) == 1 and '"train"' not in records[0], "only rank 0 writes the metrics"
