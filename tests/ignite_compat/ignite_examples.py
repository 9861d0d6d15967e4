"""PyTorch-Ignite's own examples, taken from its source distribution, with only the imports changed.

The sdist (``pytorch_ignite-0.5.5.tar.gz``) is downloaded by ``make setup``
into ``<venv>/ignite-src/``; ``DISTENGINE_IGNITE_SDIST`` names another file or
folder. Nothing of Ignite is committed here: :func:`extract` copies an
example out of the archive at test time and :func:`to_distengine` rewrites its
import lines (``ignite.X`` -> ``distengine.X``, ``ignite.contrib.handlers`` ->
``distengine.handlers``, ``ignite.contrib.metrics`` -> ``distengine.metrics``,
``ignite.contrib.engines`` -> ``distengine.engine``, ``import ignite`` ->
``import distengine as ignite``); every other line is Ignite's. The data is
offline: ``offline/`` (first on the examples' ``PYTHONPATH``) holds a small
stand-in for torchvision's datasets, transforms and models.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = Path(__file__).resolve().parent / "offline"
SDIST_NAME = "pytorch_ignite-0.5.5.tar.gz"
SDIST_ENV = "DISTENGINE_IGNITE_SDIST"
_MAPPING = (
    ("ignite.contrib.engines", "distengine.engine"),
    ("ignite.contrib.handlers", "distengine.handlers"),
    ("ignite.contrib.metrics", "distengine.metrics"),
    ("ignite", "distengine"),
)
_IMPORT = re.compile(r"^(?P<indent>\s*)(?P<kind>from|import)\s+(?P<module>ignite(\.[\w.]+)?)\b")


def sdist() -> Path:
    """The Ignite 0.5.5 source archive; an AssertionError saying how to get it when missing."""
    given = os.environ.get(SDIST_ENV)
    candidates = [Path(given)] if given else [Path(sys.prefix) / "ignite-src"]
    for candidate in candidates:
        path = candidate / SDIST_NAME if candidate.is_dir() else candidate
        if path.is_file():
            return path
    raise AssertionError(
        f"PyTorch-Ignite's source distribution {SDIST_NAME} is not at {candidates[0]}: "
        "`make setup` downloads it (pip download pytorch-ignite==0.5.5 --no-binary :all: "
        f"--no-deps --dest {Path(sys.prefix) / 'ignite-src'}); or set {SDIST_ENV} to the file"
    )


def _module(name: str) -> str:
    for old, new in _MAPPING:
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def to_distengine(source: str) -> str:
    """``source`` with its ``ignite`` imports turned into distengine's; nothing else changes."""
    lines = []
    for line in source.splitlines(keepends=True):
        match = _IMPORT.match(line)
        if match is None:
            lines.append(line)
            continue
        module, rest = match["module"], line[match.end() :]
        if match["kind"] == "import" and module == "ignite" and not rest.strip():
            line = f"{match['indent']}import distengine as ignite{rest}"
        elif match["kind"] == "import" and " as " not in rest:
            raise ValueError(f"cannot keep the name `ignite` bound in {line.strip()!r}")
        else:
            line = f"{match['indent']}{match['kind']} {_module(module)}{rest}"
        lines.append(line)
    return "".join(lines)


def extract(example: str, dest: Path, rewrite: bool = True) -> Path:
    """Copy ``examples/<example>`` (a file or a folder) from the sdist into ``dest``.

    Python files get :func:`to_distengine` unless ``rewrite`` is false (to run
    the same text with Ignite itself). Returns the copied file or folder.
    """
    prefix = f"pytorch_ignite-0.5.5/examples/{example}"
    with tarfile.open(sdist()) as archive:
        members = [
            m
            for m in archive.getmembers()
            if m.isfile() and (m.name == prefix or m.name.startswith(prefix + "/"))
        ]
        assert members, f"{SDIST_NAME} has no examples/{example}"
        for member in members:
            target = dest / member.name[len("pytorch_ignite-0.5.5/examples/") :]
            target.parent.mkdir(parents=True, exist_ok=True)
            data = archive.extractfile(member).read()  # type: ignore[union-attr]
            if rewrite and target.suffix == ".py":
                data = to_distengine(data.decode()).encode()
            target.write_bytes(data)
    return dest / example


def example_env(**extra: str) -> dict[str, str]:
    """The environment an example runs in: the offline stand-ins and this checkout first,
    no launcher's variables, no GPU, few threads."""
    prefixes = ("TORCHELASTIC", "RANK", "WORLD_SIZE", "LOCAL_", "MASTER_", "GROUP_", "DISTENGINE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    path = [str(OFFLINE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        PYTHONUNBUFFERED="1",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def run(
    command: list[str | Path], cwd: Path, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess:
    """Run ``command`` (e.g. ``[sys.executable, "main.py", "run", ...]``) to its end, in its own
    session (killed whole on a timeout); output captured as text."""
    proc = subprocess.Popen(
        [str(c) for c in command],
        cwd=cwd,
        env=example_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        raise AssertionError(f"{command} ran past {timeout} s:\n{out[-4000:]}") from None
    finally:
        try:
            os.killpg(proc.pid, 9)  # anything it left behind
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)
