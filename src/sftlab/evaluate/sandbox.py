"""Run untrusted generated programs and say how each one ended.

``run_programs(programs)`` runs each program (solution + tests, concatenated by the
caller) as a fresh ``python -I`` process and returns one :class:`ExecResult` each.
A program *passes* when it runs to its end and exits with status 0.

Defence in layers, the outer ones being the real barrier:

1. **Process.** One child per program, in its own session and process group, with
   stdin closed, stdout/stderr read through pipes with a size cap (a flood is cut
   off, never buffered), a scrubbed environment (``PATH``, ``HOME`` = ``TMPDIR`` =
   scratch, ``LANG``, ``PYTHONHASHSEED`` and the BLAS/OpenMP thread counts, which keep
   ``import numpy`` inside the process and memory limits; nothing of the evaluator's,
   API keys included) and a wall-clock timeout that SIGKILLs the whole group.
2. **Operating system.** Before any user code runs, the child (``_confine``) sets
   rlimits (CPU, address space, processes, file size, open files, no core files).
   When the evaluator runs as root it also enters new mount, network and PID
   namespaces (no network at all: the new namespace has only a loopback that is
   down; a fresh ``/proc`` shows the program only itself and its own children, never
   the machine's other processes or their command lines; the scratch directory and ``/tmp``, ``/var/tmp``, ``/dev/shm`` are fresh
   size-limited tmpfs that vanish with the program; a directory only root may enter
   that holds the interpreter, such as ``/root``, is replaced by an empty tmpfs
   showing just the interpreter's folders) and then drops to a uid of its own (one per
   worker slot, used by nothing else) with no groups and ``no_new_privs``. As that uid
   the program cannot write outside its scratch directory, signal the evaluator, or
   create more than ``max_processes`` processes (RLIMIT_NPROC is not enforced for
   root, hence the drop); whatever it leaves running is found by uid and killed.
   Without root: a user + network namespace when the kernel allows one (otherwise
   no network barrier beyond layer 3), rlimits, and the process group.
3. **In-process guards** (``_install_guards``, on by default): ``os.fork``/``exec*``/
   ``system``, ``subprocess``, ``os.kill`` of another pid, ``os.killpg``,
   ``os.setsid``, sockets other than AF_UNIX, and deleting, renaming or opening for
   writing any path outside the scratch directory raise ``SandboxViolation``. Like
   human-eval's ``reliability_guard`` this is bypassable (ctypes); it exists so that
   ordinary misbehaviour gets a clear reason. Tests turn it off to show that the OS
   layer holds alone.

Outcomes (counted apart by the caller):

- ``pass``: ran to its end, exit status 0.
- ``fail``: the program ran and its tests failed: an uncaught exception that is
  not listed below (``AssertionError``, ``NameError``, ``RecursionError`` ...), a call to
  ``exit()``/``sys.exit()`` (as in human-eval, whose ``exec`` treats ``SystemExit`` as a
  failure: the tests after it would be skipped), or ``os._exit``.
- ``error``: the program could not run or was stopped by a limit: syntax errors,
  import errors, ``MemoryError``, a sandbox violation or permission denied, a
  resource error from the OS (no more processes, files too large or too many, disk
  full, network unreachable), a fatal signal (SIGSEGV, SIGKILL by the kernel ...),
  output beyond the flood limit, or the sandbox failing to start.
- ``timeout``: killed at the wall-clock timeout, or by its CPU-time limit.

The confinement runs in the child, not in a ``preexec_fn``: ``preexec_fn`` is unsafe
in a threaded parent (children are driven from a thread pool) and rules out vfork
(cheap spawning from a large evaluator). The child starts as the evaluator's user,
reads the program from stdin, confines itself, and only then runs it; if a required
barrier cannot be set up it reports ``sandbox setup failed`` instead of running.

This module is stdlib-only and doubles as the child's entry point
(``python -I sandbox.py CONFIG`` with the program on stdin).
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass

Outcome = str  # "pass" | "fail" | "timeout" | "error"

_CHILD_SOURCE = os.path.realpath(__file__)
_UID_BASE = 1 << 30  # slot uids: _UID_BASE + (evaluator pid mod 2**22) * 128 + slot
_MAX_SLOTS = 128
_SCRATCH_MB = 64  # size of each tmpfs (scratch, /tmp ...) when namespaces are in use
_FILE_MB = 16  # RLIMIT_FSIZE
_MAX_OPEN_FILES = 128
_FLOOD_FACTOR = 256  # output beyond max_output_bytes * this kills the program
_KILL_GRACE = 2.0  # seconds to wait for pipes to close after a kill

_ERROR_TYPES = {
    "SyntaxError": "syntax error",
    "IndentationError": "syntax error",
    "TabError": "syntax error",
    "ImportError": "import error",
    "ModuleNotFoundError": "import error",
    "MemoryError": "memory limit",
    "SandboxViolation": "sandbox violation",
    "PermissionError": "permission denied",
}
_ERROR_ERRNOS = {
    errno.EAGAIN: "process limit",
    errno.EMFILE: "open-file limit",
    errno.ENFILE: "open-file limit",
    errno.EFBIG: "file size limit",
    errno.ENOSPC: "scratch space full",
    errno.EDQUOT: "scratch space full",
    errno.ENOMEM: "memory limit",
    errno.ENETUNREACH: "network blocked",
    errno.ENETDOWN: "network blocked",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


@dataclass(frozen=True)
class ExecResult:
    """How one program ended. ``outcome`` is pass / fail / timeout / error."""

    outcome: Outcome
    reason: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration: float

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"


@dataclass(frozen=True)
class _Limits:
    timeout: float
    memory_mb: int
    max_output_bytes: int
    max_processes: int


def run_programs(
    programs: list[str],
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    workers: int | None = None,
    max_output_bytes: int = 1 << 16,
    max_processes: int = 32,
    guards: bool = True,
) -> list[ExecResult]:
    """Run each program in its own sandboxed process; results in input order.

    ``timeout`` is wall-clock seconds per program (interpreter start included);
    ``memory_mb`` its address-space limit; ``workers`` programs run at once (default:
    CPU count); ``max_output_bytes`` the tail of stdout/stderr kept (output beyond 256x
    that is a flood and kills the program); ``max_processes`` the process/thread
    limit of its uid. ``guards=False`` leaves out the in-process guards (only to
    test that the OS-level barriers hold alone).
    """
    from concurrent.futures import ThreadPoolExecutor
    from queue import SimpleQueue

    if not programs:
        return []
    limits = _Limits(timeout, memory_mb, max_output_bytes, max_processes)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(programs), _MAX_SLOTS))
    slots: SimpleQueue[int] = SimpleQueue()
    for slot in range(n_workers):
        slots.put(slot)

    def one(program: str) -> ExecResult:
        slot = slots.get()
        try:
            return _run_one(program, slot, limits, guards)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(n_workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(one, programs))


# --------------------------------------------------------------------------- parent


@dataclass
class _Run:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    statuses: list[dict]
    killed: str | None  # "timeout" | "flood" | None
    duration: float


def _run_one(program: str, slot: int, limits: _Limits, guards: bool) -> ExecResult:
    """Spawn, drive and clean up one child; classify how it ended."""
    import shutil
    import subprocess
    import tempfile

    uid = _slot_uid(slot) if os.geteuid() == 0 else None
    scratch = tempfile.mkdtemp(prefix="sftlab-sandbox-")
    try:
        if uid is not None:
            os.chown(scratch, uid, uid)
        status_r, status_w = os.pipe()
        config = _child_config(scratch, uid, limits, guards, status_w)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", _child_script(), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=scratch,
                env=_child_env(scratch),
                start_new_session=True,
                pass_fds=(status_w,),
            )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        run = _drive(proc, status_r, program.encode("utf-8", "surrogatepass"), limits, uid, start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    outcome, reason = _classify(run, proc.pid, limits)
    tail = limits.max_output_bytes
    return ExecResult(
        outcome,
        reason,
        run.returncode,
        run.stdout[-tail:].decode("utf-8", "replace"),
        run.stderr[-tail:].decode("utf-8", "replace"),
        round(run.duration, 4),
    )


def _child_script() -> str:
    """This file, or its up-to-date bytecode (saves compiling it in every child)."""
    from importlib.util import cache_from_source

    compiled = cache_from_source(_CHILD_SOURCE)
    try:
        if os.stat(compiled).st_mtime >= os.stat(_CHILD_SOURCE).st_mtime:
            return compiled
    except (OSError, ValueError):
        pass
    return _CHILD_SOURCE


def _slot_uid(slot: int) -> int:
    """A uid nobody else uses: unique per (live evaluator process, worker slot)."""
    return _UID_BASE + (os.getpid() % (1 << 22)) * _MAX_SLOTS + slot


def _child_env(scratch: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",  # for subprocesses; `python -I` itself ignores PYTHON*
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _child_config(
    scratch: str, uid: int | None, limits: _Limits, guards: bool, status_fd: int
) -> dict:
    needed = _interpreter_paths()
    return {
        "scratch": scratch,
        "uid": uid,
        "status_fd": status_fd,
        "guards": guards,
        "timeout": limits.timeout,
        "memory_mb": limits.memory_mb,
        "max_processes": limits.max_processes,
        "needed": needed,
        "reveal": _blocked_dirs(needed),
    }


@functools.cache
def _interpreter_paths() -> tuple[str, ...]:
    """Folders the child interpreter reads after start-up (stdlib, site-packages)."""
    import sysconfig

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(sysconfig.get_paths().values())
    out = set()
    for p in paths:
        if os.path.isdir(p):
            out.update({os.path.abspath(p), os.path.realpath(p)})
    return tuple(sorted(out))


@functools.cache
def _blocked_dirs(paths: tuple[str, ...]) -> dict[str, list[str]]:
    """Ancestors that others may not enter, each with the children to show through."""
    blocked: dict[str, set[str]] = {}
    for path in paths:
        current = "/"
        for part in path.strip("/").split("/"):
            if part and not os.stat(current).st_mode & stat.S_IXOTH:
                blocked.setdefault(current, set()).add(part)
            current = os.path.join(current, part)
    order = sorted(blocked, key=lambda d: d.count("/") if d != "/" else 0)
    return {d: sorted(blocked[d]) for d in order}


def _drive(
    proc, status_r: int, program: bytes, limits: _Limits, uid: int | None, start: float
) -> _Run:
    """Feed the program, read capped output, enforce the deadline, reap everything."""
    import selectors

    sel = selectors.DefaultSelector()
    buffers = {"out": bytearray(), "err": bytearray(), "status": bytearray()}
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    sel.register(status_r, selectors.EVENT_READ, "status")
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
    pending = memoryview(program)
    cap, flood = limits.max_output_bytes, limits.max_output_bytes * _FLOOD_FACTOR
    total, killed, kill_at, swept = 0, None, None, False
    deadline = start + limits.timeout
    while sel.get_map():
        now = time.monotonic()
        if kill_at is None:
            if now >= deadline or total > flood:
                killed = "timeout" if now >= deadline else "flood"
                kill_at, swept = now, True
                _kill_all(proc, uid)
            elif _has_exited(proc.pid):
                kill_at = now
                _killpg(proc.pid)  # stragglers it left in its group
        elif not swept and now - kill_at > 0.1:
            swept = True  # pipes still open: something left the group; find it by uid
            _kill_all(proc, uid)
        elif now - kill_at > _KILL_GRACE:
            break  # something still holds the pipes; give up on them
        wait = 0.1 if kill_at is not None else min(0.2, max(0.0, deadline - now))
        for key, _ in sel.select(wait):
            name = key.data
            if name == "in":
                pending = _feed(sel, key.fileobj, pending)
                continue
            chunk = _read(key.fileobj)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buf = buffers[name]
            buf += chunk
            if name != "status":
                total += len(chunk)
                if len(buf) > 2 * cap:
                    del buf[:-cap]
    sel.close()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        _close_quietly(f)
    os.close(status_r)
    if kill_at is None:  # it closed its pipes itself: still hold it to the deadline
        while not _has_exited(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not _has_exited(proc.pid):
            killed = "timeout"
    _killpg(proc.pid)  # before reaping: the group id cannot have been reused yet
    returncode = proc.wait()
    if uid is not None:
        _kill_uid(uid)  # whatever left the group
    return _Run(
        returncode,
        bytes(buffers["out"]),
        bytes(buffers["err"]),
        _parse_statuses(bytes(buffers["status"])),
        killed,
        time.monotonic() - start,
    )


def _feed(sel, stdin, pending: memoryview) -> memoryview:
    try:
        written = os.write(stdin.fileno(), pending[:65536])
    except BlockingIOError:
        return pending
    except (BrokenPipeError, OSError):
        written = len(pending)
    pending = pending[written:]
    if not pending:
        sel.unregister(stdin)
        _close_quietly(stdin)
    return pending


def _read(fileobj) -> bytes:
    fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def _close_quietly(f) -> None:
    try:
        f.close()
    except OSError:
        pass


def _has_exited(pid: int) -> bool:
    """True once the child has exited, without reaping it (its pid stays reserved,
    so killing its process group afterwards cannot hit a reused id)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_all(proc, uid: int | None) -> None:
    """SIGKILL the child's process group and, when it has its own uid, every process
    of that uid (a process that left the group cannot escape this)."""
    _killpg(proc.pid)
    if uid is not None:
        _kill_uid(uid)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int, rounds: int = 200) -> None:
    for _ in range(rounds):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real or effective uid is ``uid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                head = f.read(2048)
        except OSError:
            continue
        fields = dict(line.split(b":", 1) for line in head.splitlines() if b":" in line)
        uids = fields.get(b"Uid", b"").split()
        state = fields.get(b"State", b"").strip()[:1]
        if state != b"Z" and str(uid).encode() in uids[:2]:
            found.append(int(name))
    return found


def _parse_statuses(raw: bytes) -> list[dict]:
    out = []
    for line in raw.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def _classify(run: _Run, pid: int, limits: _Limits) -> tuple[Outcome, str]:
    """Map how the child ended to (outcome, reason); see the module docstring."""
    if run.killed == "timeout":
        return "timeout", f"wall-clock timeout after {limits.timeout:g}s"
    if run.killed == "flood":
        return "error", f"output limit exceeded (> {limits.max_output_bytes * _FLOOD_FACTOR} bytes)"
    own = [s for s in run.statuses if s.get("pid") == pid]
    stages = {s.get("status"): s for s in own}
    if "setup" in stages:
        return "error", f"sandbox setup failed: {stages['setup'].get('message', '')}"
    if "started" not in stages:
        return "error", f"sandbox did not start (exit {run.returncode}): {_last_line(run.stderr)}"
    if "ok" in stages and run.returncode == 0:
        return "pass", "ok"
    if "exception" in stages:
        return _classify_exception(stages["exception"])
    if "exit" in stages:
        return "fail", f"program called exit({stages['exit'].get('code')}) before its end"
    return _classify_returncode(run.returncode)


def _classify_exception(status: dict) -> tuple[Outcome, str]:
    kind, message = status.get("type", "?"), status.get("message", "")
    text = f"{kind}: {message}" if message else kind
    if kind in _ERROR_TYPES:
        return "error", f"{_ERROR_TYPES[kind]}: {text}"
    if status.get("errno") in _ERROR_ERRNOS:
        return "error", f"{_ERROR_ERRNOS[status['errno']]}: {text}"
    return "fail", text


def _classify_returncode(returncode: int | None) -> tuple[Outcome, str]:
    if returncode is None:
        return "error", "lost track of the process"
    if returncode == 0:
        return "fail", "exited before its end (os._exit(0))"
    if returncode > 0:
        return "fail", f"exited with status {returncode} (os._exit)"
    sig = -returncode
    name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
    if sig == signal.SIGXCPU:
        return "timeout", "CPU time limit exceeded (SIGXCPU)"
    if sig == signal.SIGXFSZ:
        return "error", "file size limit exceeded (SIGXFSZ)"
    if sig == signal.SIGKILL:
        return "error", "killed by SIGKILL (likely out of memory)"
    return "error", f"killed by signal {name}"


def _last_line(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else ""


# ---------------------------------------------------------------------------- child
# Everything below runs in the child, first as the evaluator's user (root or not),
# then as the sandbox uid. It must not import sftlab (the child runs this file).

_CLONE_NEWNS = 0x00020000
_CLONE_NEWPID = 0x20000000
_MS_NOEXEC = 8
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS = 38
_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_DENIED_OS_CALLS = (
    "fork forkpty system popen execv execve execl execle execlp execlpe execvp execvpe "
    "spawnv spawnve spawnvp spawnvpe spawnl spawnle spawnlp spawnlpe posix_spawn "
    "posix_spawnp setsid setpgid setpgrp killpg"
).split()
_PATH_OS_CALLS = {  # name: how many leading arguments are paths
    "remove": 1, "unlink": 1, "rmdir": 1, "rename": 2, "replace": 2, "link": 2, "symlink": 2,
    "chmod": 1, "chown": 1, "lchown": 1, "truncate": 1, "mkfifo": 1, "mknod": 1, "utime": 1,
}  # fmt: skip


def _child_main() -> None:
    config = json.loads(sys.argv[1])
    fd = config["status_fd"]
    os.set_inheritable(fd, False)
    try:
        source = sys.stdin.buffer.read()
        _confine(config)
        _detach_stdin()
    except BaseException as exc:  # never run the program half-confined
        _report(fd, "setup", type=type(exc).__name__, message=str(exc)[:500])
        os._exit(3)
    if config["guards"]:
        _install_guards(config["scratch"])
    _run_program(source, fd)


_AS_PID: dict[int, int] = {}  # in a PID namespace: the program's pid there -> the one outside


def _report(fd: int, status: str, **fields) -> None:
    pid = _AS_PID.get(os.getpid(), os.getpid())  # what the evaluator knows the program as
    line = json.dumps({"status": status, "pid": pid, **fields}) + "\n"
    try:
        os.write(fd, line.encode()[:16384])
    except OSError:
        pass


def _detach_stdin() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _confine(config: dict) -> None:
    """Apply the OS-level barriers; raise if the required ones cannot be applied."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    uid = config["uid"]
    if os.geteuid() == 0:
        outer = os.getpid()
        own_pids = libc.unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID) == 0
        isolated = own_pids or libc.unshare(_CLONE_NEWNS | _CLONE_NEWNET) == 0
        if isolated:
            _private_mounts(libc, config)
        if own_pids:
            _enter_pid_namespace(libc, outer)
        elif config["reveal"]:
            raise RuntimeError(
                "the interpreter lies under a directory only root may enter "
                f"({', '.join(config['reveal'])}) and mount namespaces are unavailable"
            )
        _set_limits(config)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:
        libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET)  # best effort without root
        _set_limits(config)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(config["scratch"])


def _enter_pid_namespace(libc, outer: int) -> None:
    """Fork into the new PID namespace; return only in the process that runs the program.

    The namespace's first process (pid 1 there) mounts a fresh ``/proc`` and reaps; its
    child runs the program (so the program is not pid 1, whose signal rules differ).
    The process outside waits and ends as the program ended (exit status or signal),
    which is what the evaluator sees; when pid 1 ends, the kernel kills whatever the
    program left in the namespace.
    """
    done_r, done_w = os.pipe()
    init = os.fork()
    if init:  # outside: wait for the namespace, then end like the program did
        os.close(done_w)
        _, status = os.waitpid(init, 0)
        relayed = os.read(done_r, 16)
        _end_like(int(relayed) if relayed else status)
    os.close(done_r)
    _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    program = os.fork()
    if program:  # pid 1: wait for the program, pass its wait status out, end the namespace
        _, status = os.waitpid(program, 0)
        os.write(done_w, str(status).encode())
        os._exit(0)
    os.close(done_w)
    _AS_PID[os.getpid()] = outer


def _end_like(status: int) -> None:
    """Exit with the exit status, or die of the signal, that ``status`` describes."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _mount(
    libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    import ctypes

    def enc(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _private_mounts(libc, config: dict) -> None:
    """In the new mount namespace: show the interpreter, fresh tmpfs for scratch/tmp."""
    import ctypes

    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    flags = _MS_NOSUID | _MS_NODEV
    for blocked, children in config["reveal"].items():
        handles = {c: os.open(os.path.join(blocked, c), os.O_PATH) for c in children}
        _mount(libc, "tmpfs", blocked, "tmpfs", flags, "mode=0755,size=64k")
        for child, handle in handles.items():
            target = os.path.join(blocked, child)
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                os.mkdir(target)
            else:
                open(target, "w").close()
            _mount(libc, f"/proc/self/fd/{handle}", target, None, _MS_BIND | _MS_REC)
            os.close(handle)
    needed = config["needed"]
    for d in _WRITABLE_DIRS:
        holds_needed = any(p == d or p.startswith(d + "/") for p in needed)
        if os.path.isdir(d) and not holds_needed:
            _mount(libc, "tmpfs", d, "tmpfs", flags, f"mode=1777,size={_SCRATCH_MB}m")
    scratch, uid = config["scratch"], config["uid"]
    os.makedirs(scratch, exist_ok=True)
    _mount(
        libc, "tmpfs", scratch, "tmpfs", flags, f"mode=0700,uid={uid},gid={uid},size={_SCRATCH_MB}m"
    )


def _set_limits(config: dict) -> None:
    import resource

    cpu = math.ceil(config["timeout"]) + 1
    wanted = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_AS: (config["memory_mb"] << 20,) * 2,
        resource.RLIMIT_NPROC: (config["max_processes"],) * 2,
        resource.RLIMIT_FSIZE: (_FILE_MB << 20,) * 2,
        resource.RLIMIT_NOFILE: (_MAX_OPEN_FILES,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in wanted.items():
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))


def _run_program(source: bytes, fd: int) -> None:
    """Execute the program as ``__main__``; report how it ended on the status pipe."""
    import builtins
    import types

    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __file__="program.py")
    sys.modules["__main__"] = main
    sys.argv = ["program.py"]
    _report(fd, "started")
    try:
        exec(compile(source, "program.py", "exec"), main.__dict__)
    except SystemExit as exc:
        _report(fd, "exit", code=repr(exc.code)[:100])
        raise
    except BaseException as exc:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        _report(
            fd,
            "exception",
            type=type(exc).__name__,
            message=_safe_str(exc),
            errno=getattr(exc, "errno", None),
        )
        sys.exit(1)
    _report(fd, "ok")


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)[:300]
    except Exception:
        return "<unprintable>"


def _install_guards(scratch: str) -> None:
    """Layered defence: make the usual dangerous calls raise SandboxViolation.

    Patches the C-level entry points (``_posixsubprocess``, ``_socket``) and ``os``
    / ``posix``, so ``subprocess``, ``socket``, ``shutil`` and ``pathlib`` are covered
    without importing them here (they cost start-up time).
    """
    import builtins
    import io
    import posix

    class SandboxViolation(PermissionError):
        """A call the sandbox does not allow."""

    SandboxViolation.__qualname__ = SandboxViolation.__name__
    SandboxViolation.__module__ = "sandbox"
    root = os.path.realpath(scratch)

    def deny(name):
        def blocked(*args, **kwargs):
            raise SandboxViolation(f"{name} is not allowed in the sandbox")

        return blocked

    def inside(path, dir_fd=None) -> bool:
        if isinstance(path, int):
            return True
        path = os.fsdecode(os.fspath(path))
        base = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else os.getcwd()
        full = os.path.realpath(os.path.join(base, path))
        return full == root or full.startswith(root + "/") or full == os.devnull

    for mod in (os, posix):
        _guard_os(mod, deny, inside, SandboxViolation)
    _guard_open(builtins, io, inside, SandboxViolation)
    _guard_processes_and_sockets(deny, SandboxViolation)


def _guard_os(mod, deny, inside, violation) -> None:
    for name in _DENIED_OS_CALLS:
        if hasattr(mod, name):
            setattr(mod, name, deny(f"os.{name}"))
    real_kill = mod.kill

    def kill(pid, sig):
        if pid != os.getpid():
            raise violation("os.kill of another process is not allowed in the sandbox")
        return real_kill(pid, sig)

    mod.kill = kill

    def confined(name, func, n_paths):
        def wrapper(*args, **kwargs):
            dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd"))
            for path in args[:n_paths]:
                if not inside(path, dir_fd):
                    raise violation(f"{name}({path!r}): outside the scratch directory")
            return func(*args, **kwargs)

        return wrapper

    for name, n in _PATH_OS_CALLS.items():
        if hasattr(mod, name):
            setattr(mod, name, confined(f"os.{name}", getattr(mod, name), n))
    real_open = mod.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path, kwargs.get("dir_fd")):
            raise violation(f"os.open({path!r}) for writing: outside the scratch directory")
        return real_open(path, flags, *args, **kwargs)

    mod.open = os_open


def _guard_open(builtins, io, inside, violation) -> None:
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise violation(f"open({file!r}, {mode!r}): outside the scratch directory")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = guarded_open


def _guard_processes_and_sockets(deny, violation) -> None:
    import _posixsubprocess
    import _socket

    _posixsubprocess.fork_exec = deny("subprocess")
    base = _socket.socket

    class GuardedSocket(base):
        __slots__ = ()  # socket.socket adds __weakref__ itself

        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if family != _socket.AF_UNIX and fileno is None:
                raise violation("network sockets are not allowed in the sandbox")
            super().__init__(family, type, proto, fileno)

    _socket.socket = _socket.SocketType = GuardedSocket
    if "socket" in sys.modules:  # already imported: its class was built on the old base
        sys.modules["socket"].socket = GuardedSocket


if __name__ == "__main__":
    _child_main()
