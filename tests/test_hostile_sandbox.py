"""Generated code in the sandbox sees only itself: not the machine's other processes, not
their command lines (which may hold paths, tokens or other users' work)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sftlab.evaluate.sandbox import run_programs

MARKER = "sftlab-hostile-marker-7f3a"

SNOOP = f"""
import os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
lines = []
for pid in pids:
    try:
        lines.append(open(f'/proc/{{pid}}/cmdline', 'rb').read())
    except OSError:
        pass
seen = b' '.join(lines)
print('pids', pids)
assert b{MARKER!r} not in seen, 'saw another process: ' + repr(pids)
assert len(pids) <= 3, 'saw other processes: ' + repr(pids)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="PID namespaces are used when run as root")
@pytest.mark.parametrize("guards", [True, False], ids=["guards", "os-barriers-only"])
def test_a_program_sees_only_its_own_processes(guards):
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", MARKER])
    try:
        [result] = run_programs([SNOOP], timeout=10, guards=guards)
    finally:
        neighbour.kill()
        neighbour.wait()
    assert result.outcome == "pass", (result.reason, result.stdout_tail, result.stderr_tail)


@pytest.mark.skipif(os.geteuid() != 0, reason="PID namespaces are used when run as root")
def test_exit_status_and_signals_still_reach_the_evaluator():
    programs = ["import os\nos._exit(7)\n", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
                "print('fine')\n", "import os\nos.kill(os.getppid(), 9)\n"]
    exit7, segv, fine, parent = run_programs(programs, timeout=10, guards=False)
    assert exit7.outcome == "fail" and "status 7" in exit7.reason
    assert segv.outcome == "error" and "SIGSEGV" in segv.reason
    assert fine.outcome == "pass" and "fine" in fine.stdout_tail
    assert parent.outcome == "error", parent  # pid 1 of its namespace is root: not signalled
