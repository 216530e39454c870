"""``tokend.metrics`` in prometheus_client's multiprocess mode (``tokend serve --workers N``):
the process id its values check at every update is read once per process, and a forked
child still writes files of its own (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
from prometheus_client import CollectorRegistry, multiprocess
from tokend import metrics

metrics.busy_retry()
child = os.fork()
if child == 0:
    metrics.busy_retry()  # the child's own file, from zero
    os._exit(0)
os.waitpid(child, 0)
metrics.busy_retry()
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
total = registry.get_sample_value("tokend_sqlite_busy_retries_total")
files = sorted(f for f in os.listdir(sys.argv[1]) if f.startswith("counter_"))
print(total, len(files), files == sorted(f"counter_{p}.db" for p in (os.getpid(), child)))
"""


def test_a_forked_child_counts_in_its_own_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["3.0", "2", "True"], out.stdout + out.stderr


def test_the_process_id_is_not_asked_for_at_each_update(tmp_path: Path) -> None:
    script = (
        "import os\n"
        "calls = []\n"
        "real = os.getpid\n"
        "os.getpid = lambda: calls.append(1) or real()  # before prometheus_client binds it\n"
        "from tokend import metrics\n"
        "metrics.busy_retry()  # the value's file is opened\n"
        "calls.clear()\n"
        "for _ in range(100): metrics.busy_retry()\n"
        "print(len(calls))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "0", out.stdout + out.stderr
