"""One gismo.ray process per host maintains the region, and another takes the role over when it
dies: real processes attached through ``gismo.ray.client()``, the maintainer SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("ray")

import gismo  # noqa: E402
from conftest import fresh_region, remove_region  # noqa: E402

MiB = 1 << 20
WATCHDOG_S = 30.0  # a bound on waiting (no hang), not a performance assertion

# A process attached through gismo.ray that reports, every 50 ms, whether it maintains.
CHILD = """
import os, sys, time
import gismo.ray as gr
c = gr.client()
while True:
    print(int(c.maintaining), flush=True)
    time.sleep(0.05)
"""


class Attached:
    """A child process attached to the region; ``maintaining`` is what it reported last."""

    def __init__(self, spec: str) -> None:
        env = dict(os.environ, GISMO_REGION=spec)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True
        )
        self.maintaining = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.maintaining = line.strip() == "1"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_until(predicate, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < WATCHDOG_S, f"gave up waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def test_one_process_of_a_host_maintains_and_another_takes_over_when_it_is_killed():
    spec = fresh_region(32 * MiB)
    owner = gismo.connect(spec, size=32 * MiB, client_name="test")  # creates the region
    procs = []
    try:
        first = Attached(spec)
        procs.append(first)
        wait_until(lambda: first.maintaining, "the first process to maintain")
        others = [Attached(spec) for _ in range(2)]
        procs += others
        wait_until(lambda: all(p.maintaining is not None for p in others), "the others to attach")
        time.sleep(0.5)  # a few polls of the host role
        assert [p.maintaining for p in others] == [False, False], "only one maintains"
        # Client entries: the test's, three processes' and one maintainer's (not one each).
        assert owner.stats()["clients_active"] == 1 + 3 + 1
        first.kill()
        took = wait_until(lambda: sum(bool(p.maintaining) for p in others) == 1, "a successor")
        time.sleep(0.5)
        assert sum(bool(p.maintaining) for p in others) == 1, "exactly one successor"
        # The successor reaps the dead process's client and maintainer entries (same host: by
        # pid), so the table is back to the test's, two processes' and one maintainer's.
        wait_until(lambda: owner.stats()["clients_active"] == 1 + 2 + 1, "the dead one's reap")
        print(f"a successor maintained {took:.2f} s after the kill")
    finally:
        for p in procs:
            p.kill()
        owner.close()
        remove_region(spec)
