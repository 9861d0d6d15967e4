"""Run python blocks of the docs as a new interpreter would: ``-m tests.docs.blockrun SPEC``.

``SPEC`` (JSON) lists the blocks of one chain (a block and those marked
``<!-- continues -->`` after it), each with its source, the document and line
it starts at, the file it is saved as (a script, run as ``python <file>``
runs it) or none, and the files its stdout and stderr go to. They run in order
in one ``__main__`` namespace; the first that raises ends the chain. Every
``print`` called from a block's own lines and every warning shown are recorded
into ``SPEC``'s ``result`` file with the line they come from.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import sys
import traceback
import types
import warnings
from pathlib import Path


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    prints: list[list] = []  # [block index, file, line, text]
    shown: list[list] = []  # [block index, category, message, file, line]
    results = []
    current = [0]
    _record_prints(prints, current)
    _record_warnings(shown, current)
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    code = 0
    for index, block in enumerate(spec["blocks"]):
        current[0] = index
        status = _run_block(block, module)
        results.append(status)
        if status != "ok":
            code = 1
            break
    Path(spec["result"]).write_text(
        json.dumps({"status": results, "prints": prints, "warnings": shown})
    )
    return code


def _run_block(block: dict, module: types.ModuleType) -> str:
    """Run one block with its stdout and stderr in its own files; ``ok`` or what ended it."""
    _redirect(block["stdout"], block["stderr"])
    try:
        if block["file"]:
            path = os.path.abspath(block["file"])
            module.__file__ = path
            sys.argv = [block["file"]]
            sys.path[0] = os.path.dirname(path)
            tree = ast.parse(block["source"], path)
        else:
            path = block["doc"]
            sys.argv = ["-c"]
            tree = ast.increment_lineno(ast.parse(block["source"], path), block["line"] - 1)
        exec(compile(tree, path, "exec"), module.__dict__)
        return "ok"
    except SystemExit as stop:
        if stop.code in (0, None):
            return "ok"
        _print_from_block(stop)
        return f"exited with {stop.code}"
    except BaseException as error:
        _print_from_block(error)
        return f"raised {type(error).__name__}"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _print_from_block(error: BaseException) -> None:
    """The traceback as python prints it for the block: from the block's own frame on."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(error), error.with_traceback(tb), tb)


def _redirect(stdout: str, stderr: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)


def _record_prints(prints: list[list], current: list[int]) -> None:
    real = builtins.print

    def print(*args, sep=" ", end="\n", file=None, flush=False):  # noqa: A001
        frame = sys._getframe(1)
        if file is None or file is sys.stdout:
            text = io.StringIO()
            real(*args, sep=sep, end=end, file=text)
            prints.append([current[0], frame.f_code.co_filename, frame.f_lineno, text.getvalue()])
        real(*args, sep=sep, end=end, file=file, flush=flush)

    builtins.print = print


def _record_warnings(shown: list[list], current: list[int]) -> None:
    real = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        shown.append([current[0], category.__name__, str(message), filename, lineno])
        real(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
