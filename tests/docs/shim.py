"""``python`` of a docs block's ``.venv/bin``: the warm server runs it (see :mod:`tests.docs.warm`).

The harness copies this file there with ``#!<the test interpreter> -S`` as its first
line. It hands its arguments, folder, environment and open files to the server
named by ``DOCS_WARM_SOCKET`` and exits with the code of what ran there; a
signal it receives goes to that process. Without the variable (``DOCS_COLD=1``)
it runs the same request in a fresh interpreter. Standard library only (``-S``).
"""

import json
import os
import signal
import socket
import struct
import sys

REAL = sys.executable  # the test interpreter: the shebang line names it
EXIT = struct.Struct("i")


def main() -> None:
    me = os.path.abspath(sys.argv[0])
    request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "executable": me}
    path = os.environ.get("DOCS_WARM_SOCKET")
    if not path or not _supported(sys.argv[1:]):
        os.execv(REAL, [REAL, "-m", "tests.docs.warm", "run", json.dumps({**request, "fds": []})])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    fds = [fd for fd in _open_fds() if fd != sock.fileno()]
    socket.send_fds(sock, [json.dumps({**request, "fds": fds}).encode()], fds)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda signum, _: sock.send(EXIT.pack(signum)))
    while True:
        try:
            reply = sock.recv(EXIT.size)
            break
        except InterruptedError:
            continue
    code = EXIT.unpack(reply)[0] if reply else 1
    if code < 0:  # killed by a signal: so is this process
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _supported(args: list[str]) -> bool:
    while args and args[0] == "-u":
        args = args[1:]
    return bool(args) and (args[0] in ("-m", "-c") and len(args) > 1 or not args[0].startswith("-"))


def _open_fds() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
            found.append(int(name))
        except OSError:
            pass
    return sorted(found)


if __name__ == "__main__":
    main()
