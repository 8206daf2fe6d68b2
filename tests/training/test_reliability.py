"""Checkpoints under SIGKILL: a real ``lstmkit charlm train`` run is killed at random moments, again
and again; after every kill the last checkpoint and the saved model load, and ``--resume`` finally
reaches the weights, optimizer state, random state and loss curve of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lstmkit.cli import app
from lstmkit.tasks.charlm.model import CharLM
from lstmkit.training import CheckpointError, read_checkpoint
from lstmkit.training.checkpoint import check_state_dict

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows "
    "of outrageous fortune, or to take arms against a sea of troubles and by opposing end them. "
) * 12
SETTINGS = ["checkpoint_every=2", "log_every=1", "eval_every=5", "eval_chars=120", "num_layers=2", "dropout=0.1",
            "hidden_size=32", "embedding_size=8", "seq_len=16", "stride=3"]  # fmt: skip


def command(corpus: Path, out: Path, steps: int, resume: bool) -> list[str]:
    arguments = [sys.executable, "-m", "lstmkit", "charlm", "train", "--preset", "sentence", "--corpus", str(corpus),
                 "--out", str(out), "--max-steps", str(steps), "--quiet", "--sample", "0"]  # fmt: skip
    for setting in SETTINGS:
        arguments += ["--set", setting]
    return arguments + (["--resume"] if resume else [])


def environment() -> dict[str, str]:
    # One thread: deterministic whatever the machine's load, and light on it. Torch's fused kernels,
    # not the native engine: a kill while torch loads the native engine leaves its build lock behind
    # (see test_a_kill_while_the_native_engine_loads_does_not_hang_the_next_run).
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return os.environ | threads | {"LSTMKIT_ENGINE": "torch", "LSTMKIT_NATIVE": "0"}


def record_count(out: Path) -> int:
    """How many metrics records the run has written (one per step and evaluation)."""
    try:
        return (out / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def check_loadable(out: Path, last_step: int) -> int:
    """What a crash must never break: the checkpoint reads and fits the model; the saved model loads;
    every metrics record parses. Returns the checkpoint's step."""
    path = out / "checkpoint.safetensors"
    if not path.exists():
        return 0
    saved = read_checkpoint(path, task="charlm")
    model = CharLM.from_config_dict(saved["model_config"])
    check_state_dict(model, saved["model"], str(path))
    model.load_state_dict(saved["model"])
    step = saved["trainer_state"]["step"]
    assert step >= last_step, f"the checkpoint went back from step {last_step} to {step}"
    if (out / "config.json").exists():
        CharLM.from_pretrained(out)
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    return step


# A zygote: one process that has imported lstmkit forks each training run, so a run starts in
# milliseconds instead of seconds and a test can kill many runs. The forked child is a complete
# `lstmkit charlm train` process: it runs the command line from the start and is killed with SIGKILL.
ZYGOTE = """
import json, os, sys
from lstmkit.cli import app
for line in sys.stdin:
    request = json.loads(line)
    if "run" in request:
        pid = os.fork()
        if pid == 0:
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            try:
                app(request["run"], prog_name="lstmkit")
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
            except BaseException:
                code = 1
            os._exit(code)
        reply = pid
    else:
        done, status = os.waitpid(request["wait"], 0 if request["block"] else os.WNOHANG)
        reply = None if done == 0 else os.waitstatus_to_exitcode(status)
    print(json.dumps(reply), flush=True)
"""


class Run:
    """A training run started by exec (a fresh interpreter) or by the zygote (a fork)."""

    def __init__(self, arguments: list[str], zygote: subprocess.Popen | None, log: Path) -> None:
        self.zygote, self.log = zygote, log
        if zygote is None:
            self.process = subprocess.Popen(
                arguments, env=environment(), stdout=log.open("w"), stderr=subprocess.STDOUT
            )
            self.pid = self.process.pid
        else:
            self.pid = self._ask({"run": arguments[3:], "log": str(log)})
        self.returncode: int | None = None

    def _ask(self, request: dict) -> object:
        assert self.zygote is not None and self.zygote.stdin is not None and self.zygote.stdout is not None
        self.zygote.stdin.write(json.dumps(request) + "\n")
        self.zygote.stdin.flush()
        return json.loads(self.zygote.stdout.readline())

    def poll(self, block: bool = False) -> int | None:
        if self.returncode is None:
            if self.zygote is None:
                self.returncode = self.process.wait(timeout=60) if block else self.process.poll()
            else:
                self.returncode = self._ask({"wait": self.pid, "block": block})  # type: ignore[assignment]
        return self.returncode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.poll(block=True) == -signal.SIGKILL


def kill_and_resume(
    corpus: Path, out: Path, steps: int, kills: int, rng: random.Random, zygote: subprocess.Popen | None
) -> dict[str, int]:
    """Start (or resume) the run and SIGKILL it at a random moment, ``kills`` times: one time in five
    while it starts (imports, data, ``task.json``), otherwise after a random 1 to 25 more records
    (steps or evaluations) plus a random fraction of a step, so kills land anywhere in the loop."""
    figures = {"kills": 0, "killed_while_starting": 0, "killed_mid_write": 0, "finished_early": 0}
    last_step = 0
    starting_time = 2.0 if zygote is None else 0.3  # a fork skips the imports
    for _ in range(kills):
        resume = (out / "checkpoint.safetensors").exists()
        run = Run(command(corpus, out, steps, resume), zygote, out.with_name("run.log"))
        starting = rng.random() < 0.2
        if starting:
            time.sleep(rng.uniform(0.0, starting_time))
        else:
            target, deadline = record_count(out) + rng.randint(1, 25), time.monotonic() + 120
            while record_count(out) < target and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.02))
        if run.poll() is not None:  # it finished before the kill
            assert run.returncode == 0, run.log.read_text()
            figures["finished_early"] += 1
            break
        writing = any(p.name.endswith(".tmp") for p in out.iterdir()) if out.exists() else False
        run.kill()
        figures["kills"] += 1
        figures["killed_while_starting"] += starting
        figures["killed_mid_write"] += writing
        last_step = check_loadable(out, last_step) if out.exists() else 0
    figures["leftover_temp_files"] = sum(p.name.endswith(".tmp") for p in out.iterdir()) if out.exists() else 0
    figures["step_at_last_kill"] = last_step
    return figures


def compare_runs(reference: Path, resumed: Path) -> None:
    want, got = (
        read_checkpoint(reference / "checkpoint.safetensors"),
        read_checkpoint(resumed / "checkpoint.safetensors"),
    )
    assert got["trainer_state"]["step"] == want["trainer_state"]["step"]
    for part in ("model", "optimizer_tensors"):
        assert want[part].keys() == got[part].keys()
        for name, tensor in want[part].items():
            assert torch.equal(tensor, got[part][name]), f"{part} {name} differs"
    assert torch.equal(want["rng"], got["rng"])
    best = {name: tensor for name, tensor in CharLM.from_pretrained(reference).state_dict().items()}
    for name, tensor in CharLM.from_pretrained(resumed).state_dict().items():
        assert torch.equal(tensor, best[name]), f"saved model {name} differs"

    def curve(path: Path) -> list[tuple]:
        records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["split"], r.get("loss"), r.get("val_bpc")) for r in records]

    assert curve(resumed) == curve(reference)


@pytest.mark.parametrize(
    "kills, steps, seed, fork",
    [
        pytest.param(10, 200, 0, True, id="10-kills-forked"),
        pytest.param(5, 150, 1, False, id="5-kills-exec", marks=pytest.mark.slow),
        pytest.param(20, 300, 2, True, id="20-kills-forked", marks=pytest.mark.slow),
    ],
)
def test_sigkill_at_random_moments_then_resume_bit_for_bit(
    kills: int, steps: int, seed: int, fork: bool, tmp_path: Path
) -> None:
    corpus = tmp_path / "hamlet.txt"
    corpus.write_text(TEXT)
    reference = subprocess.Popen(command(corpus, tmp_path / "reference", steps, False), env=environment(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    zygote = None
    if fork:
        zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=environment(), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        figures = kill_and_resume(corpus, tmp_path / "killed", steps, kills, random.Random(seed), zygote)
    finally:
        if zygote is not None:
            zygote.stdin.close()
            zygote.wait(timeout=60)
            zygote.stdout.close()
    final = subprocess.run(command(corpus, tmp_path / "killed", steps, True), env=environment(),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert final.returncode == 0, final.stderr
    assert not [p.name for p in (tmp_path / "killed").iterdir() if p.name.endswith(".tmp")], "stale temporaries"
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    reference.stderr.close()
    print(f"\nSIGKILL figures ({kills} planned, {steps} steps, {'fork' if fork else 'exec'}): {figures}")
    assert figures["kills"] >= min(kills, 3), figures
    compare_runs(tmp_path / "reference", tmp_path / "killed")


def run_in_process(corpus: Path, out: Path, steps: int, resume: bool, monkeypatch: pytest.MonkeyPatch):
    """The same command in this process (no start-up cost), on one thread and torch's kernels as the
    killed runs (several threads on a loaded machine make it crawl)."""
    monkeypatch.setenv("LSTMKIT_ENGINE", "torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(app, command(corpus, out, steps, resume)[3:])
    finally:
        torch.set_num_threads(threads)


def test_a_torn_last_metrics_line_does_not_stop_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash in the middle of appending a record (a full disk, a power cut) leaves half a line;
    resuming drops it with the other records written after the checkpoint."""
    corpus, out = tmp_path / "hamlet.txt", tmp_path / "run"
    corpus.write_text(TEXT)
    first = run_in_process(corpus, out, 6, False, monkeypatch)
    assert first.exit_code == 0, first.output
    with open(out / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 7, "epoch": 0, "split": "tr')
    second = run_in_process(corpus, out, 8, True, monkeypatch)
    assert second.exit_code == 0, second.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 9))


def test_a_checkpoint_cut_short_is_refused_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, out = tmp_path / "hamlet.txt", tmp_path / "run"
    corpus.write_text(TEXT)
    assert run_in_process(corpus, out, 4, False, monkeypatch).exit_code == 0
    data = (out / "checkpoint.safetensors").read_bytes()
    for cut in (0, 7, 100, len(data) // 2, len(data) - 1):
        (out / "checkpoint.safetensors").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="not a safetensors file|truncated"):
            read_checkpoint(out / "checkpoint.safetensors")
    result = run_in_process(corpus, out, 6, True, monkeypatch)
    assert result.exit_code == 2
    assert "checkpoint.safetensors: truncated or not a safetensors file" in " ".join(result.output.split())


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path: Path) -> None:
    from lstmkit.training.checkpoint import remove_stale_temporaries

    (tmp_path / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".model.safetensors.x.tmp").write_bytes(b"half a model")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".checkpoint.safetensors.abc123.tmp", ".model.safetensors.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp"]


def _ninja_file(folder: Path) -> str:
    path = folder / "build.ninja"
    return path.read_text() if path.is_file() else ""


def test_a_kill_while_the_native_engine_loads_does_not_hang_the_next_run(tmp_path: Path) -> None:
    from lstmkit.engine import native
    from lstmkit.engine.native.build import CSRC, build_directory, instruction_set, native_builds

    if not native.is_available():
        pytest.skip("the native engine cannot be built here")
    # a finished build made from this checkout and this torch: another's (the cache is keyed by the
    # sources' content, so checkouts share builds) has other paths in its build.ninja, which ninja
    # would rebuild for the unmarked copy
    here = (str(CSRC), os.path.dirname(torch.__file__))
    ours = [
        build for build in native_builds()
        if build.marker.is_file() and all(path in _ninja_file(build.folder) for path in here)
    ]  # fmt: skip
    if not ours:
        pytest.skip("the cached native build was made from another checkout or torch")
    built = ours[0]
    copy = tmp_path / build_directory(instruction_set()).name / built.folder.name
    # a process killed inside cpp_extension.load leaves its lock, and its build not marked finished
    shutil.copytree(built.folder, copy, ignore=shutil.ignore_patterns("lock", built.marker.name))
    (copy / "lock").touch()
    code = "from lstmkit.engine import native; print(native.is_available())"
    env = os.environ | {"LSTMKIT_EXTENSIONS_DIR": str(tmp_path), "LSTMKIT_ENGINE": "auto"}
    env.pop("LSTMKIT_NATIVE", None)
    try:
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("loading the native engine waits forever for the lock of a killed process")
    assert result.stdout.strip() == "True", result.stderr
