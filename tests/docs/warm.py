"""A warm Python for the docs blocks: ``python`` as a block types it, without paying torch's import.

Importing torch, Hydra, distengine and the launcher takes seconds (over ten on a
loaded 2-core machine), and the docs start about twenty interpreters. So one
server process imports them once, and every ``python`` a block starts (the
``.venv/bin/python`` of the block's folder, a :mod:`tests.docs.shim`) is
forked from it, as the launcher forks its ranks from a process that imported
torch: the fork gets the shim's arguments, folder, environment and open files,
calls itself ``sys.executable`` = the shim's path (as a venv's python does), runs
``-m module``, ``-c code`` or a script as ``__main__``, and exits as the
interpreter would (non-daemon threads joined, atexit run, exit code sent back).
Nothing the block runs is imported in the server before it: only third-party
packages and this repository's modules, which a fresh interpreter would import
identically. ``DOCS_COLD=1`` runs every block in a fresh interpreter instead.

    python -m tests.docs.warm serve SOCKET   # the server (tests/test_docs.py starts it)
    python -m tests.docs.warm run REQUEST    # one request in this interpreter (cold mode)
"""

from __future__ import annotations

import atexit
import fcntl
import io
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading
import traceback
import types

#: What the server imports once (what the blocks and the launcher import at their start).
PRELOAD = (
    "numpy",
    "torch",
    "torch.distributed.fsdp",
    "torch.utils.tensorboard",
    "sklearn.datasets",
    "hydra",
    "omegaconf",
    "tqdm",
    "distengine.engine",
    "distengine.metrics",
    "distengine.handlers",
    "distengine.distributed",
    "distengine.checkpoint",
    "launch.cli",
    "launch.job.start",
    "launch.recipe.train",
    "launch.rank.entry",
)
MAX_FDS = 250
_EXIT = struct.Struct("i")


def serve(path: str) -> None:
    """Import :data:`PRELOAD`, then fork a handler per connection until the parent goes."""
    import ctypes
    import importlib

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent went before prctl
        return
    for name in PRELOAD:
        importlib.import_module(name)
    import torch

    # torch's optimizers import torch._dynamo (and sympy) when the first one is made: seconds
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path + ".new")
    listener.listen(16)
    listener.settimeout(1.0)
    os.rename(path + ".new", path)  # the socket appears once the server answers
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _handle(conn)
            finally:
                os._exit(0)
        conn.close()


def _handle(conn: socket.socket) -> None:
    """Receive one request, fork its process, forward signals, send back its exit code."""
    conn.setblocking(True)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, MAX_FDS)
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _adopt_fds(fds, request["fds"])
        os.setpgid(0, 0)
        run(request)  # never returns
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([conn, pidfd], [], [])
        if pidfd in ready:
            _, status = os.waitpid(pid, 0)
            conn.send(_EXIT.pack(os.waitstatus_to_exitcode(status)))
            return
        message = conn.recv(_EXIT.size)
        if not message:  # the shim is gone (killed, timed out): so is what it ran
            kill_tree(pid)
            os.waitpid(pid, 0)
            return
        os.killpg(pid, _EXIT.unpack(message)[0])  # a signal the shim received


def _adopt_fds(received: list[int], numbers: list[int]) -> None:
    """Make the shim's open files this process's, under the same numbers; close the rest."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1024) for fd in received]
    for fd in received:
        os.close(fd)
    for fd, number in zip(high, numbers):
        os.dup2(fd, number)
    keep = set(numbers)
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass


def run(request: dict) -> None:
    """Become ``request['argv']`` run by the interpreter ``request['executable']``; exit."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.executable = request["executable"]
    args = list(request["argv"][1:])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    while args and args[0] == "-u":
        unbuffered, args = True, args[1:]
    _std_streams(unbuffered)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 0
    try:
        _run_main(args)
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException as error:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # the traceback starts where python's own would
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        code = 1
    os._exit(_finalize(code))


def _run_main(args: list[str]) -> None:
    """``-m module``, ``-c code`` or a script, as ``__main__`` (sys.argv and sys.path[0] as python
    sets them)."""
    if args[0] == "-m":
        sys.argv, sys.path[0] = [args[1], *args[2:]], os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[0] == "-c":
        sys.argv, sys.path[0] = ["-c", *args[2:]], ""
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(args[1], "<string>", "exec"), main.__dict__)
    else:
        sys.argv = args
        sys.path[0] = os.path.dirname(os.path.realpath(args[0]))
        runpy.run_path(args[0], run_name="__main__")


def _std_streams(unbuffered: bool) -> None:
    """sys.stdin/stdout/stderr over fds 0-2, buffered as a new interpreter buffers them."""

    def stream(fd: int, write: bool, errors: str) -> io.TextIOWrapper | None:
        try:
            raw = io.FileIO(fd, "w" if write else "r", closefd=False)
        except OSError:
            return None
        buffer = (io.BufferedWriter if write else io.BufferedReader)(raw)
        tty = raw.isatty()
        return io.TextIOWrapper(
            buffer,
            encoding="utf-8",
            errors=errors,
            line_buffering=write and (tty or fd == 2),
            write_through=unbuffered and write,
        )

    sys.stdin = sys.__stdin__ = stream(0, False, "strict")
    sys.stdout = sys.__stdout__ = stream(1, True, "strict")
    sys.stderr = sys.__stderr__ = stream(2, True, "backslashreplace")


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _finalize(code: int) -> int:
    """What the interpreter does at exit: join threads, run atexit, flush the streams."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except SystemExit as stop:
        code = _exit_code(stop.code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    return code


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and every process it started (ranks, servers)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for each in tree:
        try:
            os.kill(each, signal.SIGKILL)
        except OSError:
            pass


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        run(json.loads(sys.argv[2]))
