"""A tansu broker of a test's own, for tests that stop, stall or restart it (the session's shared
broker is never stopped)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

from aimass import stack
from aimass.kafka import create_topics
from aimass.processes import free_port, stop_pid
from aimass.settings import Settings


class Broker:
    """A tansu broker on a fixed port that can be stopped and started again (in-memory: it comes back
    empty, and the topics are created again, as an operator's restart script would)."""

    def __init__(self, tmp, prefix: str):
        self.port = free_port()
        self.tmp = tmp
        self.prefix = prefix
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.tmp / "tansu.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(stack.tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        stack.wait_for_port("127.0.0.1", self.port, 20, self.proc)
        asyncio.run(create_topics(Settings(kafka_bootstrap=self.bootstrap, topic_prefix=self.prefix)))

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()  # a paused broker would not hear its SIGTERM
            stop_pid(self.proc.pid)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as with a hung broker."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
