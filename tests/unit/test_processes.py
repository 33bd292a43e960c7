"""aimass.processes: liveness of processes that are not ours."""

import subprocess
import time

from aimass.processes import pid_alive


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
