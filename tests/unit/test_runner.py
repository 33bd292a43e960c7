"""The worker runner: the start-up heap freeze, and how many processes each worker runs as."""

import gc
import weakref

import pytest

from aimass import runner
from aimass.runner import freeze_startup_heap


class _Node:
    pass


def test_freeze_keeps_live_objects_out_of_collections_and_frees_garbage_first():
    garbage = _Node()
    garbage.self = garbage  # a cycle only the collector frees
    gone = weakref.ref(garbage)
    del garbage
    live = [_Node()]
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gone() is None  # collected, not frozen for the worker's lifetime
        assert gc.get_freeze_count() > before
        assert not any(o is live for o in gc.get_objects())  # frozen objects are outside every generation
    finally:
        gc.unfreeze()


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
