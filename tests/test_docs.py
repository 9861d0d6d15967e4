"""Every code block of README.md and docs/*.md runs as the text presents it and prints what it
shows (the harness is in tests/docs/; the same conventions head docs/guide.md, in a comment).

How each block is run:

- ``python``: on its own, in a new interpreter (its own imports), in its
  document's folder (below). A block whose first line names a file (``# train.py``)
  is that file, saved there, and runs as ``python train.py`` does (``__file__``,
  ``sys.argv``). A block with ``<!-- continues -->`` on the lines above it runs
  after the python block before it, in the same process and namespace (the
  chain is one test, named after its first block).
- ``bash``: each command (a line; ``\\`` continues it) runs with bash in the
  document's folder, one after the other, and must exit 0, or the code a
  comment on it names (``# exits 2``). A command listed in :data:`NOT_RUN` is
  not run, and a test says so with the reason. The folder is a project as
  ``make setup`` leaves it: ``Makefile``, ``pyproject.toml``, ``.venv/bin``
  (``python``, ``torchrun``, ``tensorboard``) and what ``make setup`` makes,
  marked up to date (``make -t``), so ``make setup`` has nothing to do;
  ``python``, ``torchrun`` and ``tensorboard`` are on PATH as after ``source
  .venv/bin/activate``, except for ``make`` commands (typed in a fresh shell,
  as the README's are). The same command with the same files runs once per
  session (README.md and the guide share ``make setup && make train``).
- A block whose first line names a file, in any other language (``yaml``):
  written to that path before the document's blocks run; a command of the
  same document must use it.
- ``text`` (or ``console``, ``output``) right after a python or bash block
  (only blank lines between), or after ``<!-- output -->`` when prose lies
  between: what that block prints (stdout; stdout and stderr together for
  bash), compared by the rules of :mod:`tests.docs.expected` (``...`` elides,
  ``<name>`` stands for a word, dates and times match by shape, numbers with a
  decimal point within 5%, the block's folder is ``/home/you/distengine``, the
  words exactly).
- ``print(...)  # <text>``: the comment is what that call prints, each time it
  is called (same rules); a commented call that never runs fails.
- A warning shown while a python block runs fails it unless a comment on the
  block's line that causes it says ``# warns: <words of the message>``.
- ``text`` blocks that are no block's output, and blocks without a language
  (diagrams), are shown, not run. Any other block that is not run is listed in
  :data:`SHOWN_ONLY` with the reason.

Each document has its own folder for the session (``tmp_path_factory``). The CPU
is held to two cores (``dist.nproc_per_node=auto`` gives the 2 ranks the
README shows) and CUDA is hidden. ``python`` is a warm interpreter forked
from one that imported torch once (:mod:`tests.docs.warm`); ``DOCS_COLD=1``
starts a real one per block (the same results, a few times slower).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import pytest

from tests.docs.expected import mismatch
from tests.docs.markdown import OUTPUT, Block, blocks
from tests.launcher.launching import clean_env

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "api.md")]

_CIFAR10 = (
    "Ignite's CIFAR10 example needs its source distribution, CIFAR10 and torchvision: "
    "tests/ignite_compat/test_ignite_examples.py runs these three offline"
)

#: Commands of bash blocks that are not run here, as typed (comments and extra spaces left out),
#: and why.
NOT_RUN = {
    "make test": "the whole test suite, this test included",
    'make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"': (
        "downloads and installs torch (no network here)"
    ),
    "make setup TORCH= PYTHON=/path/to/python": "/path/to/python stands for your interpreter",
    "make setup TORCH= VENV=~/venvs/torch": "~/venvs/torch stands for your virtual environment",
    # the guide's "Coming from PyTorch-Ignite": Ignite's examples/cifar10/main.py, from its
    # source distribution, with CIFAR10 (downloaded) and torchvision
    "python main.py run --backend=gloo --nproc_per_node=2": _CIFAR10,
    "torchrun --nproc_per_node=2 main.py run --backend=gloo": _CIFAR10,
    "python -m launch task.script=main.py dist.nproc_per_node=2 -- run --backend=gloo": _CIFAR10,
}

#: Blocks shown and not run (other than text and diagrams), by document and first line, and why.
SHOWN_ONLY: dict[tuple[str, str], str] = {}

TIMEOUT_S = 280
_BLOCKS = {doc: blocks(doc) for doc in DOCS}
_ALL = [block for found in _BLOCKS.values() for block in found]
PYTHON = [b for b in _ALL if b.lang == "python" and b.head is None]
BASH = [b for b in _ALL if b.lang in ("bash", "sh", "shell")]
_EXITS = re.compile(r"#.*\bexits? (\d+)\b")
_CPUS = sorted(os.sched_getaffinity(0))[:2]


# ---------------------------------------------------------------- the documents' folders


@pytest.fixture(scope="session")
def warm(tmp_path_factory):
    """The warm interpreter's socket (None with DOCS_COLD=1); the server stops with the session."""
    if os.environ.get("DOCS_COLD"):
        yield None
        return
    path = tmp_path_factory.mktemp("warm") / "python.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.docs.warm", "serve", str(path)],
        cwd=ROOT,
        env={**clean_env(), "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: os.sched_setaffinity(0, _CPUS),
    )
    deadline = time.monotonic() + 120
    while not path.exists() and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"the warm interpreter did not start (exit {server.poll()})"
    yield str(path)
    server.kill()
    server.wait()


@pytest.fixture(scope="session")
def folders(tmp_path_factory, warm):
    """``folders(doc)``: the document's project folder, made once, with its file blocks."""
    made: dict[Path, Path] = {}

    def folder(doc: Path) -> Path:
        if doc not in made:
            made[doc] = _project(tmp_path_factory.mktemp(doc.stem), _BLOCKS[doc])
        return made[doc]

    folder.warm = warm  # type: ignore[attr-defined]
    return folder


def _project(folder: Path, found: list[Block]) -> Path:
    """A folder as ``make setup`` leaves a clone (Makefile, .venv/bin, the stamp), with the
    document's files."""
    for name in ("Makefile", "pyproject.toml", "setup.py"):
        (folder / name).symlink_to(ROOT / name)
    bin_ = folder / ".venv" / "bin"
    bin_.mkdir(parents=True)
    shim = (ROOT / "tests" / "docs" / "shim.py").read_text()
    for name in ("python", "python3"):
        (bin_ / name).write_text(f"#!{sys.executable} -S\n{shim}")
        (bin_ / name).chmod(0o755)
    (bin_ / "torchrun").write_text(
        '#!/bin/sh\nexec "$(dirname "$0")/python" -m torch.distributed.run "$@"\n'
    )
    (bin_ / "torchrun").chmod(0o755)
    tensorboard = Path(sys.executable).parent / "tensorboard"
    if tensorboard.exists():
        (bin_ / "tensorboard").symlink_to(tensorboard)
    _mark_set_up(folder)
    (folder / ".tmp").mkdir()
    for block in found:
        if block.file:
            (folder / block.file).parent.mkdir(parents=True, exist_ok=True)
            (folder / block.file).write_text(block.text)
    return folder


def _mark_set_up(folder: Path) -> None:
    """Touch what ``make setup`` would make (``make -t`` cannot make their folders), so that it
    has nothing to do."""
    plan = subprocess.run(
        ["make", "-t", "-n", "setup"], cwd=folder, capture_output=True, text=True, check=True
    )
    for line in plan.stdout.splitlines():
        if line.startswith("touch "):
            (folder / line[6:]).parent.mkdir(parents=True, exist_ok=True)
            (folder / line[6:]).touch()
    assert subprocess.run(["make", "-q", "setup"], cwd=folder).returncode == 0, plan.stdout


def _env(folder: Path, warm: str | None, activated: bool) -> dict[str, str]:
    """What a block's commands see: a clean environment, the venv, 2 cores, no CUDA."""
    env = clean_env()
    env.pop("PYTHONUNBUFFERED", None)
    venvs = {str(Path(sys.executable).parent), str(folder / ".venv" / "bin")}
    path = [p for p in env.get("PATH", os.defpath).split(":") if p not in venvs]
    env["PATH"] = ":".join(([str(folder / ".venv" / "bin")] if activated else []) + path)
    env["PYTHONPATH"] = str(ROOT)
    env["TMPDIR"] = str(folder / ".tmp")
    env.pop("DOCS_WARM_SOCKET", None)
    for name in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"):  # under `make test`:
        env.pop(name, None)  # a user's fresh shell has none (no "make[1]: Entering ...")
    if warm:
        env["DOCS_WARM_SOCKET"] = warm
    return env


def _popen_run(args: list[str], folder: Path, env: dict[str, str], out: Path) -> int:
    """Run ``args`` in ``folder`` with its output in ``out``; kill all it started on timeout."""
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            args,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: os.sched_setaffinity(0, _CPUS),
        )
        try:
            return proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{' '.join(args)} ran past {TIMEOUT_S} s:\n{_tail(out)}")


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# ---------------------------------------------------------------- python blocks


def _prints(block: Block, filename: str, first_line: int) -> dict[tuple[str, int], str]:
    """``print(...)  # text`` in ``block``: (file, line the call starts on) -> the text."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(block.text).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string[1:].strip()
    expected = {}
    for node in ast.walk(ast.parse(block.text)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            said = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            if said and not said[-1].startswith("warns:"):
                expected[(filename, node.lineno + first_line - 1)] = said[-1]
    return expected


def _expected_warnings(block: Block, filename: str, first_line: int) -> dict[int, str]:
    """``# warns: words`` comments: line -> the words the warning's message must contain."""
    return {
        first_line - 1 + n: line.split("# warns:", 1)[1].strip()
        for n, line in enumerate(block.text.split("\n"), 1)
        if "# warns:" in line
    }


@pytest.mark.parametrize("head", PYTHON, ids=lambda b: b.name)
def test_python_block(head: Block, folders) -> None:
    folder = folders(head.doc)
    chain = [head, *head.continues]
    work = folder / ".blocks" / f"{head.doc.stem}-{head.line}"
    work.mkdir(parents=True)
    spec = {"result": str(work / "result.json"), "blocks": []}
    for n, block in enumerate(chain):
        spec["blocks"].append(
            {
                "doc": str(block.doc),
                "line": block.line,
                "source": block.text,
                "file": block.file,
                "stdout": str(work / f"{n}.out"),
                "stderr": str(work / f"{n}.err"),
            }
        )
    (work / "spec.json").write_text(json.dumps(spec))
    python = str(folder / ".venv" / "bin" / "python")
    env = _env(folder, folders.warm, activated=True)
    code = _popen_run(
        [python, "-m", "tests.docs.blockrun", str(work / "spec.json")],
        folder,
        env,
        work / "run.log",
    )
    assert (work / "result.json").exists(), (
        f"{head.name}: the runner failed ({code}):\n{_tail(work / 'run.log')}"
    )
    result = json.loads((work / "result.json").read_text())
    problems = []
    for n, block in enumerate(chain):
        if n >= len(result["status"]):
            problems.append(f"{block.name}: not run (a block before it failed)")
            continue
        if result["status"][n] != "ok":
            problems.append(f"{block.name}: {result['status'][n]}:\n{_tail(work / f'{n}.err')}")
            continue
        problems += _check_python_block(block, n, folder, work, result)
    assert not problems, "\n".join(problems)


def _check_python_block(block: Block, n: int, folder: Path, work: Path, result: dict) -> list[str]:
    filename, first = (str(folder / block.file), 1) if block.file else (str(block.doc), block.line)
    problems = []
    printed = [(f, line, text) for i, f, line, text in result["prints"] if i == n]
    for (f, line), want in _prints(block, filename, first).items():
        calls = [text for g, at, text in printed if (g, at) == (f, line)]
        if not calls:
            problems.append(
                f"{block.name}: the print on line {line} never ran (it should print {want!r})"
            )
        for text in calls:
            wrong = mismatch(want, text, str(folder))
            if wrong:
                problems.append(f"{block.name}: the print on line {line}: {wrong}")
    expected_warnings = _expected_warnings(block, filename, first)
    for i, category, message, f, line in result["warnings"]:
        if i == n and not any(words in message for words in expected_warnings.values()):
            problems.append(f"{block.name}: {f}:{line}: {category}: {message}")
    if block.output is not None:
        wrong = mismatch(block.output.text, (work / f"{n}.out").read_text(), str(folder))
        if wrong:
            problems.append(f"{block.name}: its output ({block.output.name}): {wrong}")
    return problems


# ---------------------------------------------------------------- bash blocks


def commands(block: Block) -> list[str]:
    """The block's commands, one per line (``\\`` joins lines), without comment-only lines."""
    text = block.text.replace("\\\n", " ")
    return [
        line.strip()
        for line in text.split("\n")
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _typed(command: str) -> str:
    """The command as :data:`NOT_RUN` names it: without its comment, spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"\s+#.*$", "", command)).strip()


_RAN: dict[tuple[str, str], tuple[int, str]] = {}


def _files_digest(doc: Path, command: str) -> str:
    """What the command may read of the document's files: those whose folder or name it names."""
    used = [b.text for b in _BLOCKS[doc] if b.file and b.file.split("/")[0] in command]
    return hashlib.sha256("\0".join(used).encode()).hexdigest()


@pytest.mark.parametrize("block", BASH, ids=lambda b: b.name)
def test_bash_block(block: Block, folders) -> None:
    folder = folders(block.doc)
    outputs, ran = [], 0
    for command in commands(block):
        if _typed(command) in NOT_RUN:
            continue
        exits = _EXITS.search(command)
        key = (_typed(command), _files_digest(block.doc, command))
        if key not in _RAN:
            log = folder / ".blocks" / f"{block.doc.stem}-{block.line}-{ran}.log"
            log.parent.mkdir(exist_ok=True)
            env = _env(folder, folders.warm, activated=not command.startswith("make"))
            code = _popen_run(["bash", "-c", command], folder, env, log)
            _RAN[key] = (
                code,
                log.read_text(errors="replace").replace(str(folder), "/home/you/distengine"),
            )
        code, output = _RAN[key]
        want = int(exits.group(1)) if exits else 0
        assert code == want, (
            f"{block.name}: `{command}` exited {code} (not {want}):\n{output[-4000:]}"
        )
        outputs.append(output)
        ran += 1
    if not ran:
        pytest.skip("; ".join(f"{_typed(c)}: {NOT_RUN[_typed(c)]}" for c in commands(block)))
    if block.output is not None:
        wrong = mismatch(block.output.text, "".join(outputs))
        assert wrong is None, (
            f"{block.name}: its output ({block.output.name}): {wrong}\n{''.join(outputs)[-4000:]}"
        )


@pytest.mark.parametrize("command", sorted(NOT_RUN))
def test_not_run(command: str) -> None:
    """Each command not run is one the docs show, and is reported as skipped with its reason."""
    shown = {_typed(c) for block in BASH for c in commands(block)}
    if command not in shown:  # a command of another branch's docs, until the merge
        pytest.skip("not shown in these docs: remove it from NOT_RUN once no branch shows it")
    pytest.skip(f"not run: {command}: {NOT_RUN[command]}")


# ---------------------------------------------------------------- every block accounted for


def test_every_block_is_run_or_listed() -> None:
    """A block is run, is a run block's output or a file a command uses, is text or a diagram,
    or is in SHOWN_ONLY; nothing else is silently left out."""
    outputs = {id(b.output) for b in _ALL if b.output is not None}
    problems = []
    for block in _ALL:
        first = block.text.split("\n", 1)[0]
        if block.runnable or id(block) in outputs or block.lang in OUTPUT + ("",):
            continue
        if block.file:
            used = any(
                block.file.split("/")[0] in c
                for b in BASH
                if b.doc == block.doc
                for c in commands(b)
            )
            if not used:
                problems.append(f"{block.name}: no command of {block.doc.name} uses {block.file}")
        elif (block.doc.name, first) not in SHOWN_ONLY:
            problems.append(
                f"{block.name} ({block.lang}): not run; name its file on its first line, or list "
                f"({block.doc.name!r}, {first!r}) in SHOWN_ONLY with the reason"
            )
    stale = set(SHOWN_ONLY) - {(b.doc.name, b.text.split("\n", 1)[0]) for b in _ALL}
    problems += [f"SHOWN_ONLY names {key}, which no block starts with" for key in stale]
    assert not problems, "\n".join(problems)
