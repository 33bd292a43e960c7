"""The worker runner: the garbage collector's set-up, how many processes each worker runs as, and the
supervisor's restarts (children that exit at once, in a supervisor process of its own)."""

import gc
import signal
import subprocess
import sys
import threading
import weakref

import pytest
from conftest import wait_until

from aimass import runner
from aimass.runner import YOUNG_OBJECTS_BEFORE_COLLECTION, settle_collector


class _Node:
    pass


def test_settling_keeps_live_objects_out_of_collections_and_frees_garbage_first():
    garbage = _Node()
    garbage.self = garbage  # a cycle only the collector frees
    gone = weakref.ref(garbage)
    del garbage
    live = [_Node()]
    before, threshold = gc.get_freeze_count(), gc.get_threshold()
    try:
        settle_collector()
        assert gone() is None  # collected, not frozen for the worker's lifetime
        assert gc.get_freeze_count() > before
        assert not any(o is live for o in gc.get_objects())  # frozen objects are outside every generation
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_a_batch_of_young_objects_sets_off_no_collection_after_settling():
    """What a sink batch holds (here 40k small containers, alive together, then freed) runs no
    collection; at Python's default threshold it runs dozens."""
    runs = []

    def count(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    def batch():
        runs.clear()
        held = [[i] for i in range(40_000)]
        del held
        return len(runs)

    threshold = gc.get_threshold()
    gc.callbacks.append(count)
    try:
        gc.set_threshold(700, 10, 10)
        assert batch() > 20
        settle_collector()
        assert gc.get_threshold()[0] == YOUNG_OBJECTS_BEFORE_COLLECTION
        assert batch() == 0
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_processes_per_worker_come_from_their_settings(monkeypatch):
    monkeypatch.setattr(runner, "usable_cores", lambda: 3)
    assert runner.expand(["detector", "rules", "sink"]) == ["detector", "rules", "sink"]  # one each by default
    monkeypatch.setenv("AIMASS_SINK_PROCESSES", "2")
    monkeypatch.setenv("AIMASS_RULES_PROCESSES", "0")  # one per usable core
    assert runner.expand(["detector", "rules", "sink"]) == ["detector", "rules", "rules", "rules", "sink", "sink"]
    assert runner.processes_of("registry") == 1 and runner.processes_of("bench-noop") == 1
    assert runner.processes_of("sink", 1) == 1 and runner.processes_of("detector", 0) == 3  # --processes wins


def test_a_negative_process_count_is_refused(monkeypatch):
    from pydantic import ValidationError
    monkeypatch.setenv("AIMASS_SINK_PROCESSES", "-1")
    with pytest.raises(ValidationError, match="sink_processes"):
        runner.processes_of("sink")


def _supervisor(tmp_path, **constants) -> tuple[subprocess.Popen, list[str]]:
    """``run_all(["sink", "rules"])`` in a process of its own, whose children exit at once with code 2
    (what a bad site file does at every start), ``constants`` set on the runner; its log lines so far."""
    script = tmp_path / "supervise.py"
    script.write_text(
        "import logging, subprocess, sys\n"
        "from aimass import runner\n"
        f"for k, v in {constants!r}.items():\n"
        "    setattr(runner, k, v)\n"
        "runner.spawn = lambda name, *a, **kw: subprocess.Popen([sys.executable, '-c', 'raise SystemExit(2)'])\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "sys.exit(runner.run_all(['sink', 'rules']))\n")
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return proc, lines


def test_the_supervisor_waits_out_a_back_off_without_blocking_a_stop_or_other_workers(tmp_path):
    proc, lines = _supervisor(tmp_path, RESTART_FIRST_S=60.0)
    try:
        # Both children's exits are seen at once (the old loop slept through one back-off before it
        # looked at the next child), and SIGTERM during a 60 s back-off stops the supervisor at once.
        wait_until(lambda: sum("restarting in 60 s" in line for line in lines) == 2, 20, "both children's exits",
                   interval_s=0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_child_that_had_run_a_while_restarts_after_the_first_back_off_again(tmp_path):
    # RESTART_RESET_S 0: every exit counts as one after a long run, so the back-off never doubles.
    proc, lines = _supervisor(tmp_path, RESTART_FIRST_S=0.3, RESTART_RESET_S=0.0)
    try:
        wait_until(lambda: sum("worker sink exited" in line for line in lines) >= 3, 30, "three restarts of sink",
                   interval_s=0.05)
    finally:
        proc.kill()
        proc.wait()
    assert all("restarting in 0 s" in line for line in lines if "worker sink exited" in line)
