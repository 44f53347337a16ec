"""Sandboxed execution: normal programs are classified right, hostile ones are contained.

Every hostile program runs twice: with the in-process guards (the usual case) and
without them (``guards=False``), which shows that the OS-level barriers hold alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sftlab.evaluate.sandbox import ExecResult, _pids_of_uid, _slot_uid, run_programs

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-sandbox-test-secret-7f3a"


def test_normal_programs_are_classified():
    programs = {
        "pass": "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('done')\n",
        "assert": "def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5, 'wrong sum'\n",
        "name": "assert undefined_function(1) == 1\n",
        "syntax": "def add(a, b)\n    return a + b\n",
        "import": "import no_such_module_xyz\n",
        "exit": "import sys\nsys.exit(0)\nassert False\n",
    }
    results = dict(zip(programs, run_programs(list(programs.values()), timeout=20), strict=True))
    assert results["pass"].outcome == "pass" and results["pass"].returncode == 0
    assert results["pass"].stdout_tail == "done\n"
    assert results["assert"].outcome == "fail"
    assert "AssertionError: wrong sum" in results["assert"].reason
    assert "wrong sum" in results["assert"].stderr_tail
    assert results["name"].outcome == "fail" and "NameError" in results["name"].reason
    assert results["syntax"].outcome == "error" and "syntax error" in results["syntax"].reason
    assert results["import"].outcome == "error" and "import error" in results["import"].reason
    # exit() before the tests must not count as passing (human-eval semantics)
    assert results["exit"].outcome == "fail" and "exit" in results["exit"].reason
    assert all(isinstance(r, ExecResult) and r.duration > 0 for r in results.values())


def test_results_keep_input_order_with_parallel_workers():
    programs = [
        f"import time\ntime.sleep({0.3 if i % 2 else 0})\nassert {i} % 3 != 0\n" for i in range(8)
    ]
    results = run_programs(programs, workers=4, timeout=20)
    assert [r.outcome for r in results] == ["fail" if i % 3 == 0 else "pass" for i in range(8)]


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture
def canaries(tmp_path):
    """Canary files the programs try to delete and overwrite: one in a temp dir, one
    in a folder the sandbox can see (under the repo's ignored .cache)."""
    (REPO_ROOT / ".cache").mkdir(exist_ok=True)
    visible = Path(tempfile.mkdtemp(prefix="sandbox-canary-", dir=REPO_ROOT / ".cache"))
    files = [tmp_path / "canary.txt", visible / "canary.txt"]
    for f in files:
        f.write_text("do not touch\n")
    yield files
    shutil.rmtree(visible, ignore_errors=True)


def _hostile_programs(canaries: list[Path], port: int, victim_pid: int) -> dict[str, str]:
    paths = json.dumps([str(c) for c in canaries])
    return {
        "infinite_loop": "while True:\n    pass\n",
        "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "escaping_children": (
            "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n"
            "        try:\n            os.setsid()\n        except OSError:\n            pass\n"
            "        time.sleep(600)\n"
            "time.sleep(0.5)\nassert False, 'children left behind'\n"
        ),
        "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(200 * 2**20))\n",
        "delete_files": (
            f"import os, shutil\nfor p in {paths}:\n    try:\n        os.remove(p)\n"
            "    except FileNotFoundError:\n        pass\n"
            f"    shutil.rmtree(os.path.dirname(p))\n"
        ),
        "write_files": (
            f"for p in {paths}:\n    with open(p, 'w') as f:\n        f.write('pwned')\n"
        ),
        "read_environment": (
            "import os\nseen = repr(dict(os.environ))\n"
            "try:\n    seen += repr(open(f'/proc/{os.getppid()}/environ', 'rb').read())\n"
            "except OSError as e:\n    print('proc environ:', e)\n"
            f"assert {SECRET!r} in seen, 'secret not found'\n"
        ),
        "signal_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "signal_other": f"import os, signal\nos.kill({victim_pid}, signal.SIGKILL)\n",
        "flood_stdout": "while True:\n    print('x' * 10000)\n",
        "network": (
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'leak')\n"
        ),
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("guards", [True, False], ids=["guards", "os-barriers-only"])
def test_hostile_programs_are_contained(guards, canaries, listener, monkeypatch):
    monkeypatch.setenv("SFTLAB_TEST_SECRET", SECRET)
    victim = subprocess.Popen(["sleep", "120"])
    try:
        before = {c: _digest(c) for c in canaries}
        programs = _hostile_programs(canaries, listener.getsockname()[1], victim.pid)
        start = time.monotonic()
        results = dict(
            zip(
                programs,
                run_programs(
                    list(programs.values()),
                    timeout=5,  # room for a slow interpreter start on a loaded machine
                    memory_mb=512,
                    workers=2,
                    max_output_bytes=4096,
                    guards=guards,
                ),
                strict=True,
            )
        )
        elapsed = time.monotonic() - start
        assert victim.poll() is None, "a program killed another process"
    finally:
        victim.kill()
        victim.wait()

    for name, result in results.items():
        assert result.outcome in {"fail", "timeout", "error"}, (name, result)
        assert result.reason, name
        assert SECRET not in result.stdout_tail + result.stderr_tail, name
    assert results["infinite_loop"].outcome == "timeout"
    assert results["memory_bomb"].outcome == "error"
    assert "memory" in results["memory_bomb"].reason
    assert results["flood_stdout"].outcome in {"error", "timeout"}
    assert len(results["flood_stdout"].stdout_tail.encode()) <= 4096
    assert results["read_environment"].outcome == "fail"
    assert "secret not found" in results["read_environment"].reason
    assert {c: _digest(c) for c in canaries} == before, "a file outside scratch changed"
    with pytest.raises(BlockingIOError):
        listener.accept()  # no connection ever arrived
    assert elapsed < 60  # safety bound, not a speed goal
    if os.geteuid() == 0:  # every slot uid is empty: nothing was left running
        assert all(not _pids_of_uid(_slot_uid(s)) for s in range(2))


def test_guard_reasons_name_the_blocked_call():
    programs = [
        "import os\nos.fork()\n",
        "import subprocess\nsubprocess.run(['true'])\n",
        "import socket\nsocket.socket()\n",
    ]
    results = run_programs(programs, timeout=20)
    assert [r.outcome for r in results] == ["error"] * 3
    assert "os.fork" in results[0].reason
    assert "subprocess" in results[1].reason
    assert "network" in results[2].reason


def test_scratch_directory_is_private_and_removed():
    program = (
        "import os, tempfile\nopen('out.txt', 'w').write('hello')\n"
        "assert open('out.txt').read() == 'hello'\n"
        "assert tempfile.gettempdir() == os.getcwd()\n"
        "print(os.getcwd())\n"
    )
    (result,) = run_programs([program], timeout=20)
    assert result.outcome == "pass", result
    scratch = result.stdout_tail.strip()
    assert Path(scratch).name.startswith("sftlab-sandbox-")
    assert not Path(scratch).exists()


def test_cpu_time_limit_or_wall_clock_stops_busy_children():
    program = "import time\ntime.sleep(30)\n"
    (result,) = run_programs([program], timeout=1)
    assert result.outcome == "timeout" and result.returncode == -signal.SIGKILL
    assert result.duration < 10


# ------------------------------------------------- real benchmark programs (acceptance)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared_jsonl(name: str) -> list[dict]:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_humaneval_canonical_solutions_all_pass():
    rows = _shared_jsonl("humaneval.jsonl")
    programs = [
        f"{r['prompt']}{r['canonical_solution']}\n\n{r['test']}\n\ncheck({r['entry_point']})\n"
        for r in rows
    ]
    results = run_programs(programs)
    failed = [
        (r["task_id"], res.reason) for r, res in zip(rows, results, strict=True) if not res.passed
    ]
    assert not failed


def test_mbpp_reference_code_passes_and_broken_code_fails():
    rows = [r for r in _shared_jsonl("mbpp.jsonl") if 11 <= r["task_id"] <= 510][::10]
    tests = ["\n".join([r["test_setup_code"], *r["test_list"]]) for r in rows]
    good = [f"{r['code']}\n\n{t}\n" for r, t in zip(rows, tests, strict=True)]
    broken = [f"{t}\n" for t in tests]  # the tests without the solution
    results = run_programs(good + broken)
    assert sum(r.passed for r in results[: len(rows)]) >= 0.99 * len(rows)
    assert not any(r.passed for r in results[len(rows) :])
