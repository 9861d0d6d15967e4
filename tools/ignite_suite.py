"""Run PyTorch-Ignite 0.5.5's own tests on distengine, with only their imports changed.

The tests come from Ignite's source distribution (``make setup`` puts it in
``.venv/ignite-src``; ``--sdist`` names another folder or ``.tar.gz``). The
chosen folders of ``tests/ignite`` are copied to a temporary folder and every
``import ignite...`` / ``from ignite... import`` line of a test module is
rewritten as the guide's import mapping says (``ignite.X`` -> ``distengine.X``,
``ignite.contrib.handlers`` -> ``distengine.handlers``, ``ignite.contrib.metrics``
-> ``distengine.metrics``, ``ignite.contrib.engines`` -> ``distengine.engine``,
``import ignite`` -> ``import distengine as ignite``). Nothing else changes.
Ignite's test harness (its ``conftest.py`` and ``__init__.py`` files) is not a
test and stays as it is: it imports Ignite itself (the sdist's copy).

pytest runs them as Ignite's CI does on a CPU without distributed tests
(``-m "not distributed and not tpu and not multinode_distributed"``, no GPU).
The report gives, per folder, how many tests Ignite collects there and how many
pass, fail, error (a module that does not import: all its tests) or skip, and
the failures grouped by cause (exception and message, numbers blanked).

Example::

    python tools/ignite_suite.py                         # engine, metrics, handlers, contrib
    python tools/ignite_suite.py metrics/test_accuracy.py engine/test_engine.py
    python tools/ignite_suite.py metrics/test_loss.py::test_compute --no-ignite-count
    python tools/ignite_suite.py --json out.json --sdist ~/pytorch-ignite-0.5.5.tar.gz
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SDISTS = [ROOT / ".venv" / "ignite-src", Path("/work/ignite-0.5.5")]
FOLDERS = [
    "engine",
    "metrics",
    "handlers",
    "contrib/engines",
    "contrib/handlers/test_logger_utils.py",
]
MARKERS = "not distributed and not tpu and not multinode_distributed"
RENAMES = [  # longest first: the first prefix that matches wins
    ("ignite.contrib.handlers", "distengine.handlers"),
    ("ignite.contrib.metrics", "distengine.metrics"),
    ("ignite.contrib.engines", "distengine.engine"),
    ("ignite", "distengine"),
]
_IMPORT = re.compile(r"^(\s*)(from|import)\s+(ignite(?:\.[\w.]+)?)\b(.*)$")


# ------------------------------------------------------------------ the sources
def find_sdist(given: str | None) -> Path:
    """The folder of Ignite's extracted sdist (holding ``tests/ignite``), extracting a tarball."""
    candidates = [Path(given).expanduser()] if given else DEFAULT_SDISTS
    for path in candidates:
        found = _sdist_root(path)
        if found is not None:
            return found
    names = ", ".join(str(p) for p in candidates)
    raise SystemExit(
        f"ignite_suite: no PyTorch-Ignite sdist with tests/ignite at {names}; run `make setup` "
        "or pass --sdist FOLDER_OR_TAR_GZ (pip download pytorch-ignite==0.5.5 --no-binary :all:)"
    )


def _sdist_root(path: Path) -> Path | None:
    if path.is_dir() and (path / "tests" / "ignite").is_dir():
        return path
    if path.is_dir():
        inner = [p for p in sorted(path.iterdir()) if _sdist_root(p) is not None]
        if inner:
            return _sdist_root(inner[-1])
        return None
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        target = Path(tempfile.gettempdir()) / f"ignite-sdist-{path.stat().st_size}"
        if not target.is_dir():
            with tarfile.open(path) as archive:
                try:
                    archive.extractall(target, filter="data")
                except TypeError:  # a Python without extraction filters (before 3.10.12)
                    archive.extractall(target)  # noqa: S202 - PyPI's own sdist
        return _sdist_root(target)
    return None


def renamed(module: str) -> str:
    """``module`` under the guide's import mapping."""
    for old, new in RENAMES:
        if module == old or module.startswith(old + "."):
            return new + module[len(old) :]
    return module


def rewrite_line(line: str) -> str:
    """One source line with its Ignite import rewritten (other lines unchanged)."""
    body = line.rstrip("\r\n")
    match = _IMPORT.match(body)
    if match is None:
        return line
    end = line[len(body) :]
    indent, kind, module, rest = match.groups()
    if kind == "from":
        return f"{indent}from {renamed(module)}{rest}{end}"
    if rest.lstrip().startswith(("as ", ",")):
        return f"{indent}import {renamed(module)}{rest}{end}"
    if module == "ignite":
        return f"{indent}import distengine as ignite{rest}{end}"
    # `import ignite.x.y` binds `ignite`: bind it to distengine too
    return f"{indent}import {renamed(module)}; import distengine as ignite{rest}{end}"


def rewrite(text: str) -> str:
    """A test module with its Ignite imports rewritten."""
    return "".join(rewrite_line(line) for line in text.splitlines(keepends=True))


def prepare(sdist: Path, folders: list[str], workdir: Path, change_imports: bool = True) -> Path:
    """Copy Ignite's harness and ``folders`` (paths under tests/ignite, or node ids
    ``file.py::test_name`` whose file is copied) into ``workdir``."""
    source = sdist / "tests"
    target = workdir / "tests"
    for harness in ("__init__.py", "ignite/__init__.py", "ignite/conftest.py"):
        (target / harness).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / harness, target / harness)
    for folder in dict.fromkeys(target.split("::")[0] for target in folders):
        path = source / "ignite" / folder
        if not path.exists():
            raise SystemExit(f"ignite_suite: {folder!r} is not under {source / 'ignite'}")
        parent = path if path.is_dir() else path.parent
        for level in [parent, *parent.parents]:  # the packages and conftests above it
            if level == source:
                break
            for name in ("__init__.py", "conftest.py"):
                if (level / name).exists():
                    copy = target / (level / name).relative_to(source)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(level / name, copy)
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            copy = target / file.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            text = file.read_text()
            harness = file.name in ("conftest.py", "__init__.py")
            copy.write_text(rewrite(text) if change_imports and not harness else text)
    (workdir / "pytest.ini").write_text("[pytest]\n")
    harness_site = workdir / "_ignite_itself"  # for the harness only: tests import distengine
    harness_site.mkdir()
    (harness_site / "ignite").symlink_to(sdist / "ignite")
    return workdir


# ------------------------------------------------------------------ running
def pytest_command(workdir: Path, targets: list[str], extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", MARKERS]
    command += ["-o", "addopts=", "-W", "ignore::DeprecationWarning"]
    command += ["--continue-on-collection-errors"]
    if _has_module("pytest_timeout"):
        command += ["--timeout", "180"]
    return command + [f"tests/ignite/{t}" for t in targets] + extra


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def environment(workdir: Path, library_first: bool) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(workdir / "_ignite_itself")]
    if not library_first:
        paths.reverse()
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def collected(sdist: Path, folders: list[str]) -> Counter:
    """How many tests Ignite itself collects per file (its own imports, on Ignite)."""
    with tempfile.TemporaryDirectory(prefix="ignite-suite-") as tmp:
        workdir = prepare(sdist, folders, Path(tmp), change_imports=False)
        command = pytest_command(workdir, folders, ["--collect-only"])
        result = subprocess.run(
            command, cwd=workdir, env=environment(workdir, False), capture_output=True, text=True
        )
    counts: Counter = Counter()
    for line in result.stdout.splitlines():
        if "::" in line and line.startswith("tests/ignite/"):
            counts[line.split("::")[0][len("tests/ignite/") :]] += 1
    return counts


def run(
    sdist: Path, folders: list[str], keyword: str | None, on_ignite: bool = False
) -> list[dict]:
    """Each test's outcome on distengine (on Ignite itself with ``on_ignite``): file, name,
    outcome, cause."""
    with tempfile.TemporaryDirectory(prefix="ignite-suite-") as tmp:
        workdir = prepare(sdist, folders, Path(tmp), change_imports=not on_ignite)
        junit = workdir / "junit.xml"
        extra = [f"--junitxml={junit}"] + (["-k", keyword] if keyword else [])
        command = pytest_command(workdir, folders, extra)
        subprocess.run(
            command, cwd=workdir, env=environment(workdir, not on_ignite), stdout=subprocess.DEVNULL
        )
        if not junit.exists():
            raise SystemExit("ignite_suite: pytest wrote no report (see its output above)")
        return outcomes(ET.parse(junit).getroot())


def outcomes(root: ET.Element) -> list[dict]:
    results = []
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        outcome, cause = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                cause = _cause(child)
                break
        if not classname:  # a module that failed to import: named by its dotted path
            outcome, file = "uncollected", _file_of(name)
        else:
            file = _file_of(classname)
        results.append({"file": file, "name": name, "outcome": outcome, "cause": cause})
    return results


def _file_of(dotted: str) -> str:
    parts = dotted.split(".")[2:]  # drop "tests.ignite"
    for i in range(len(parts), 0, -1):
        if parts[i - 1].startswith("test_"):
            return "/".join(parts[:i]) + ".py"
    return "/".join(parts) + ".py"


def _cause(element: ET.Element) -> str:
    """The exception line: the last ``E   Type: message`` of the traceback, or the message."""
    text = element.text or ""
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    exception = re.compile(r"^[\w.]+(Error|Exception|Warning|Interrupt)")
    typed = [line for line in lines if exception.match(line)]
    message = typed[-1] if typed else (lines[0] if lines else element.get("message", ""))
    return message.strip()


def group_of(cause: str) -> str:
    """A cause with numbers, addresses and long literals blanked, so alike failures group."""
    cause = cause.split("\n")[0]
    cause = re.sub(r" \(/[^)]*\.py\)", "", cause)  # where the module lives on this machine
    cause = re.sub(r"0x[0-9a-f]+", "0x…", cause)
    cause = re.sub(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?", "N", cause)
    cause = re.sub(r"tensor\(\[.*", "tensor([…", cause)
    return cause[:160]


# ------------------------------------------------------------------ reporting
def folder_of(file: str) -> str:
    parts = file.split("/")
    depth = 2 if parts[0] == "contrib" or len(parts) > 2 else 1
    return "/".join(parts[:depth]) if len(parts) > depth else parts[0]


def summary(results: list[dict], expected: Counter | None) -> dict:
    """Counts per folder (and per file), the failure groups, in a JSON-able dict."""
    per_file: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        per_file[result["file"]][result["outcome"]] += 1
    if expected is not None:
        for file, count in expected.items():
            per_file[file]["ignite_collects"] = count
    for counts in per_file.values():
        if counts["uncollected"]:  # the module does not import: every test Ignite has there
            counts["error"] += counts.pop("uncollected") - 1 + max(counts["ignite_collects"], 1)
    per_folder: dict[str, Counter] = defaultdict(Counter)
    for file, counts in per_file.items():
        per_folder[folder_of(file)].update(counts)
    groups: dict[str, list[str]] = defaultdict(list)
    weights: Counter = Counter()  # tests lost: a module that does not import loses them all
    for result in results:
        if result["outcome"] in ("failed", "error", "uncollected"):
            cause = group_of(result["cause"])
            groups[cause].append(f"{result['file']}::{result['name']}")
            lost = per_file[result["file"]].get("ignite_collects", 1)
            weights[cause] += max(lost, 1) if result["outcome"] == "uncollected" else 1
    return {
        "folders": {k: dict(v) for k, v in sorted(per_folder.items())},
        "files": {k: dict(v) for k, v in sorted(per_file.items())},
        "causes": sorted(
            ([k, v, weights[k]] for k, v in groups.items()), key=lambda kv: (-kv[2], kv[0])
        ),
    }


def render(report: dict, seconds: float, max_groups: int) -> str:
    columns = ["passed", "failed", "error", "skipped", "ignite_collects"]
    lines = [f"{'folder':<24}" + "".join(f"{c:>16}" for c in columns)]
    total: Counter = Counter()
    for folder, counts in report["folders"].items():
        total.update(counts)
        lines.append(f"{folder:<24}" + "".join(f"{counts.get(c, 0):>16}" for c in columns))
    lines.append(f"{'total':<24}" + "".join(f"{total.get(c, 0):>16}" for c in columns))
    lines.append(f"({seconds:.0f} s)\n")
    lines.append("failures and errors by cause (tests lost, a few of them):")
    for cause, tests, lost in report["causes"][:max_groups]:
        lines.append(f"{lost:>5}  {cause}")
        lines.extend(f"         {test}" for test in tests[:3])
    rest = report["causes"][max_groups:]
    if rest:
        lines.append(f"  ... {len(rest)} more causes ({sum(c[2] for c in rest)} tests)")
    return "\n".join(lines)


TITLE = "## PyTorch-Ignite's own tests on distengine"
REPORT = ROOT / "benchmarks" / "REPORT.md"


def markdown(report: dict, reference: dict | None, max_groups: int) -> str:
    """The report as a REPORT.md section: counts per folder and the largest failure causes."""
    import datetime
    import platform

    import torch

    columns = ["passed", "failed", "error", "skipped"]
    head = ["folder", *columns] + (["passes on Ignite 0.5.5"] if reference else [])
    lines = [
        f"{TITLE} ({datetime.date.today().isoformat()}; Python {platform.python_version()}, "
        f"torch {torch.__version__}; CPU, no distributed tests, as Ignite's CI)",
        "",
        "`python tools/ignite_suite.py`: Ignite's tests/ignite/{engine,metrics,handlers,"
        "contrib} with only their imports changed. A module that does not import counts "
        "all its tests as errors.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    total: Counter = Counter()
    ignite_total = 0
    for folder, counts in report["folders"].items():
        total.update(counts)
        row = [folder, *(str(counts.get(c, 0)) for c in columns)]
        if reference:
            passes = reference["folders"].get(folder, {}).get("passed", 0)
            ignite_total += passes
            row.append(str(passes))
        lines.append("| " + " | ".join(row) + " |")
    row = ["**total**", *(f"**{total.get(c, 0)}**" for c in columns)]
    lines.append("| " + " | ".join(row + ([f"**{ignite_total}**"] if reference else [])) + " |")
    lines += ["", "Largest causes of the failures and errors left:", ""]
    for cause, tests, lost in report["causes"][:max_groups]:
        lines.append(f"- {lost} × `{cause}` (e.g. `{tests[0]}`)")
    return "\n".join(lines)


def write_report(section: str) -> None:
    """Replace this tool's section of benchmarks/REPORT.md (or add it at the end)."""
    text = REPORT.read_text() if REPORT.exists() else "# distengine benchmarks\n"
    pattern = re.compile(rf"^{re.escape(TITLE)}.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    REPORT.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "targets",
        nargs="*",
        help=f"folders, files or file.py::test_name under tests/ignite (default {FOLDERS})",
    )
    parser.add_argument("--sdist", help="Ignite's sdist: a folder or a .tar.gz")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--json", help="write the full report (every failure) to this file")
    parser.add_argument("--groups", type=int, default=40, help="failure causes to print")
    parser.add_argument(
        "--no-ignite-count", action="store_true", help="skip counting what Ignite collects"
    )
    parser.add_argument(
        "--on-ignite", action="store_true", help="run the unchanged tests on Ignite itself"
    )
    parser.add_argument(
        "--reference", help="the --json of an --on-ignite run: adds what passes on Ignite"
    )
    parser.add_argument(
        "--report", action="store_true", help=f"write the counts into {REPORT.name}"
    )
    args = parser.parse_args(argv)
    sdist = find_sdist(args.sdist)
    folders = args.targets or FOLDERS
    start = time.perf_counter()
    expected = None if args.no_ignite_count else collected(sdist, folders)
    results = run(sdist, folders, args.keyword, args.on_ignite)
    report = summary(results, expected)
    print(render(report, time.perf_counter() - start, args.groups))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, **report}, indent=1))
    if args.report:
        reference = json.loads(Path(args.reference).read_text()) if args.reference else None
        write_report(markdown(report, reference, max_groups=12))
        print(f"wrote its section of {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
