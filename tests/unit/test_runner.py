"""The worker runner's start-up heap freeze."""

import gc
import weakref

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
