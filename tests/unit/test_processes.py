"""aimass.processes: liveness of processes that are not ours, and the CPU of a process tree."""

import contextlib
import os
import signal
import subprocess
import sys
import time

from conftest import wait_until

from aimass.processes import cpu_seconds, descendants, pid_alive, stop_pid


def test_an_exited_process_that_is_not_our_child_is_not_alive_before_it_is_reaped():
    # sh starts `sleep 0`, then becomes `sleep 5`, which never reaps it: an exited grandchild of ours.
    parent = subprocess.Popen(["sh", "-c", "sleep 0 & echo $!; exec sleep 5"], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(parent.stdout.readline())
        end = time.monotonic() + 5
        while pid_alive(grandchild) and time.monotonic() < end:
            time.sleep(0.01)
        assert not pid_alive(grandchild)
        assert open(f"/proc/{grandchild}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"  # not reaped yet
        assert pid_alive(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    assert not pid_alive(parent.pid)


def test_stopping_pid_0_stops_nothing():
    # A stack started without ClickHouse records its pid as 0: stopping it must not signal our own group
    # (this test's process, and the child below, would get SIGTERM).
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stop_pid(0, timeout_s=0.1)
        assert child.poll() is None and pid_alive(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_a_tree_s_cpu_counts_the_grandchild_that_does_the_work():
    # What a server started through runuser looks like: a parent that only waits, its child burning CPU.
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{burn}'; true"])
    try:
        wait_until(lambda: descendants(parent.pid), 10, "the parent's child to start")
        child = descendants(parent.pid)[0]
        wait_until(lambda: cpu_seconds(child) >= 0.25, 20, "the child to burn its CPU")
        assert cpu_seconds(parent.pid) < 0.1  # the parent alone says nothing of it
        assert cpu_seconds(parent.pid, *descendants(parent.pid)) >= cpu_seconds(child) >= 0.25
    finally:
        for pid in [*descendants(parent.pid), parent.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        parent.wait()
