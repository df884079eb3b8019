"""The live view of a running sweep (gdna.sweep.live).

Fast: the view's block and plain lines from stand-in trials; `ray_output` sends fd 1/2 to the log and
keeps gdna's stream on the terminal (verbose 2: leaves everything on the terminal).
Slow: a tiny inline sweep through the CLI in a pseudo-terminal: a redrawn block whose counts add up,
readable trial names, no Ray warnings or tables (they are in <sweep>/ray.log). In a pipe (no redraws,
one plain line per finished trial): the end-to-end sweeps of test_sweep_e2e, whose output is a file.
"""
from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from gdna.sweep import live

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
HEAD = re.compile(r"^(\w+)  (\d+)/(\d+) done · (\d+) running · (\d+) errored · (\d+) pending · ETA (\S+)")
RAY_NOISE = re.compile(r"WARNING|INFO|== Status ==|Trial name|\(raylet\)|\(pid=|Traceback|ray\.tune|Logical resource")


class FakeTrial:
    def __init__(self, i, status, last_result=None):
        self.trial_id, self.config, self.status = f"t{i}", {"i": i}, status
        self.last_result = last_result or {}
        self.error_file = None
        self.num_failures = 0


def resolver(config):
    i = config["i"]
    arch = ["transformer", "mamba"][i % 2]
    return (f"k{i}", {"train": {"objective": "cls", "epochs": 4}}, {"arch": arch},
            f"{arch}-scratch-human_enhancers_cohn-lr0.001-b32-s{i}-f0")


def test_block_counts_names_eta_and_best_per_architecture(monkeypatch):
    out = io.StringIO()
    con = live.Console(out, live=True, log_path=None)
    monkeypatch.setattr(live, "_console", con)
    view = live.LiveView("finetune", resolver, total=6, metric="val_acc", mode="max")
    trials = [FakeTrial(0, "RUNNING"), FakeTrial(1, "RUNNING"), FakeTrial(2, "PENDING")]
    view.on_trial_start(0, trials, trials[0])
    trials[0].last_result = {"epoch": 2, "val_acc": 0.61}
    view.on_trial_result(0, trials, trials[0], trials[0].last_result)
    done = {"final": True, "status": "finished", "best_val_acc": 0.7, "test_acc": 0.68, "time_total_s": 12.0}
    trials[1].status, trials[1].last_result = "TERMINATED", done
    view.on_trial_complete(0, trials, trials[1])
    text = out.getvalue()
    # the finished trial's permanent line, by its readable name
    assert "finetune 1/6  finished mamba-scratch-human_enhancers_cohn-lr0.001-b32-s1-f0  best_val_acc 0.7  test_acc 0.68  (12 s)" in text
    block = view.lines(trials)
    m = HEAD.match(block[0])
    assert m and m.groups()[:6] == ("finetune", "1", "6", "1", "0", "4"), block[0]
    assert m.group(7) != "…"  # an ETA once a trial time is measured
    assert "transformer-scratch-human_enhancers_cohn-lr0.001-b32-s0-f0  epoch 2/4  val_acc 0.61" in block[1]
    assert block[-1] == "  best best_val_acc: mamba 0.7"
    assert "\x1b[" in text  # redrawn in place
    # a plain console (not a terminal): the line only, never a block
    plain = io.StringIO()
    monkeypatch.setattr(live, "_console", live.Console(plain, live=False, log_path=None))
    trials[0].status, trials[0].last_result = "TERMINATED", {**done, "best_val_acc": 0.75}
    view.on_trial_complete(0, trials, trials[0])
    view.on_step_end(0, trials)
    assert plain.getvalue().splitlines() == [
        "finetune 2/6  finished transformer-scratch-human_enhancers_cohn-lr0.001-b32-s0-f0  best_val_acc 0.75  "
        "test_acc 0.68  (12 s)"]


def test_the_view_pickles_without_its_state():
    import pickle

    view = live.LiveView("pretrain", resolver, total=2, metric="val_loss", mode="min")
    view._finished = 5
    back = pickle.loads(pickle.dumps(view))
    assert back._finished == 0 and back.total == 2 and back.stage == "pretrain"


SCRIPT = r"""
import os, sys
from pathlib import Path
from gdna.sweep import live
with live.ray_output(Path(sys.argv[1]), int(sys.argv[2]), sys.stdout) as term:
    os.write(1, b"raw fd 1\n"); os.write(2, b"raw fd 2\n")
    print("python stdout"); print("python stderr", file=sys.stderr)
    term.write("gdna line\n")
print("after")
"""


@pytest.mark.parametrize("verbose", [1, 2])
def test_ray_output_goes_to_the_log_unless_verbose_2(tmp_path, verbose):
    log = tmp_path / "ray.log"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(log), str(verbose)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    if verbose < 2:
        assert r.stdout.splitlines() == ["gdna line", "after"] and r.stderr == ""
        assert sorted(log.read_text().splitlines()) == ["python stderr", "python stdout", "raw fd 1", "raw fd 2"]
    else:
        assert not log.exists()
        assert r.stdout.splitlines() == ["raw fd 1", "python stdout", "gdna line", "after"]
        assert r.stderr.splitlines() == ["raw fd 2", "python stderr"]


# ---------------------------------------------------------------------------------------------
def _spec(d: Path, name: str) -> Path:
    space = d / "space.yaml"
    space.write_text(yaml.safe_dump({"grid": {"train.lr": [1e-3, 3e-3], "train.batch_size": [32]}, "seeds": [0]}))
    spec = {
        "name": name, "tasks": ["human_enhancers_cohn"], "architectures": ["transformer"], "strategies": ["scratch"],
        "search_space": str(space), "model": {"d_model": 32},
        "data": {"max_len": 100, "max_train_examples": 128, "max_eval_examples": 64, "n_folds": 1},
        "train": {"epochs": 2, "patience": None},
        "resources": {"runner": "inline", "workers_per_trial": 1, "cpus_per_worker": 1.0, "max_failures": 0},
        "verbose": 1,
    }
    p = d / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _env(data_root) -> dict:
    env = dict(os.environ, GDNA_DATA_ROOT=str(data_root), PYTHONUNBUFFERED="1",
               GDNA_RAY_TMPDIR=tempfile.mkdtemp(prefix="gr", dir="/tmp"))
    env.pop("RAY_ADDRESS", None)
    return env


def _run_in_pty(cmd: list[str], env: dict, timeout: float) -> tuple[int, str]:
    import pty

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows × 160 columns
    os.set_blocking(master, False)
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data and proc.poll() is not None:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        os.close(master)
    return rc, b"".join(chunks).decode(errors="replace")


def _cli() -> list[str]:
    return [sys.executable, "-m", "gdna.cli"]


def _finished_lines(text: str, total: int) -> list[str]:
    return [ln for ln in text.splitlines() if re.match(rf"^finetune \d+/{total}  finished ", ln)]


@pytest.mark.slow
def test_live_view_in_a_terminal(tmp_path, data_root):
    names = {f"transformer-scratch-human_enhancers_cohn-lr{lr}-b32-s0-f0" for lr in ("0.001", "0.003")}
    # a terminal: redrawn block, counts that add up, readable names; no Ray output
    rc, raw = _run_in_pty([*_cli(), "sweep", str(_spec(tmp_path, "live_tty")), "--storage", str(tmp_path / "runs")],
                          _env(data_root), timeout=600)
    assert rc == 0, raw[-3000:]
    assert re.search(r"\x1b\[\d+F\x1b\[J", raw), "the block was never redrawn"
    lines = [ANSI.sub("", ln).rstrip("\r") for ln in raw.replace("\r\n", "\n").split("\n")]
    heads = [HEAD.match(ln) for ln in lines if HEAD.match(ln)]
    assert heads, raw[-3000:]
    for m in heads:
        done, total, running, errored, pending = (int(m.group(i)) for i in (2, 3, 4, 5, 6))
        assert total == 2 and done + running + errored + pending == total, m.group(0)
    assert any(int(m.group(4)) >= 1 for m in heads)  # a running trial was shown ...
    shown = {ln.split()[0] for ln in lines if ln.startswith("  transformer-")}
    assert shown <= names and shown, shown  # ... by its readable name
    assert {ln.split()[3] for ln in _finished_lines("\n".join(lines), 2)} == names
    noise = [ln for ln in lines if RAY_NOISE.search(ln)]
    assert not noise, noise
    log = (tmp_path / "runs" / "sweeps" / "live_tty" / live.RAY_LOG).read_text()
    assert "== Status ==" in log  # Tune's table went to the log
    # in a pipe (no terminal): the end-to-end sweep tests check the plain lines (test_sweep_e2e)


def test_a_restored_stage_counts_the_trials_it_finished_before(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(live, "_console", live.Console(out, live=False, log_path=None))
    view = live.LiveView("finetune", resolver, total=6, metric="val_acc", mode="max")  # a fresh driver
    trials = [FakeTrial(i, "TERMINATED", {"final": True, "status": "finished"}) for i in range(3)]
    trials.append(FakeTrial(3, "RUNNING", {"final": True, "status": "finished", "best_val_acc": 0.6}))
    view.on_trial_complete(0, trials, trials[3])
    assert out.getvalue().startswith("finetune 4/6  finished mamba-scratch-human_enhancers_cohn-lr0.001-b32-s3-f0")
    assert view.counts(trials) == {"done": 4, "running": 0, "errored": 0, "pending": 2}
