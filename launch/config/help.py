"""``python -m launch --help``: every key of the composed config, its value and one line.

The lines come from the comments beside the keys in the config files (the
one place they are written), the groups' descriptions from the schema and
the files' leading comments. Overrides given with ``--help`` are applied
(``python -m launch model=cnn --help`` shows the CNN's keys).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from launch.config.command_line import CommandLine
from launch.config.compose import CONF_DIR, compose, job_config
from launch.config.schema import GROUPS, TARGET_GROUPS

_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")

USAGE = """\
usage: python -m launch [KEY=VALUE ...] [-m KEY=A,B ...] [--config-dir DIR] [--config-name NAME]
                        [-- SCRIPT ARGS ...]

Checks the config, takes the run folder and starts the job's ranks with
torch.distributed's elastic agent (as torchrun does). With no arguments it
runs the default job. The user guide: docs/guide.md in the source repository."""

FLAGS = """\
flags:
  -m, --multirun              a sweep: one job per value (optim.lr=0.1,0.01)
  --config-dir DIR            also look in DIR for configs (your own model=..., data=... files)
  --config-name NAME          the primary config, in conf/ or DIR (default: config)
  -- ARGS ...                 task.script's own arguments, as torchrun passes them
  hydra.run.dir=DIR           the run folder (default: outputs/<date>/<time>)
  --cfg job                   print the composed config and exit
  --hydra-help                Hydra's own flags"""


def yaml_comments(path: Path) -> tuple[str, dict[str, str]]:
    """A YAML file's leading comment, and each key's comment (``task.script`` when nested)."""
    lead: list[str] = []
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("#") and not found and not stack:
            lead.append(line.lstrip("# ").strip())
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([*(k for _, k in stack), match["key"]])
        value, _, comment = match["rest"].partition(" #")
        if comment.strip():
            found[key] = comment.strip()
        if not value.strip():
            stack.append((indent, match["key"]))
    return " ".join(lead), found


def _find(name: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)


def _options(group: str, folders: list[Path]) -> list[str]:
    found = {p.stem for f in folders for p in (f / group).glob("*.yaml")}
    return sorted(found)


def _group_lines(group: str, values: dict[str, Any], notes: dict[str, str], fallback: str) -> list:
    rows = []
    for key, value in values.items():
        if key.startswith("_"):
            continue
        note = notes.get(key) or notes.get(f"{group}.{key}") or fallback
        rows.append((f"{group}.{key}={_shown(value)}", note))
    return rows


def help_text(line: CommandLine) -> str:
    """The whole ``--help`` text for this command line's config."""
    cfg = compose(line.overrides, line.config_dir, line.config_name)
    job = job_config(cfg)
    choices = cfg.hydra.runtime.choices
    folders = [Path(CONF_DIR)] + ([Path(line.config_dir).expanduser()] if line.config_dir else [])
    primary = _find(f"{line.config_name}.yaml", folders)
    _, primary_notes = yaml_comments(primary) if primary else ("", {})
    sections = [USAGE]
    for group, schema in GROUPS.items():
        option = choices.get(group)
        path = _find(f"{group}/{option}.yaml", folders) if option else None
        lead, notes = yaml_comments(path) if path else ("", {})
        about = (schema.__doc__ or "").strip().splitlines()[0].replace("``", "")
        rows = _group_lines(group, job[group], {**primary_notes, **notes}, "")
        sections.append(_section(f"{group}: {lead or about}", rows))
    for group in TARGET_GROUPS:
        option = choices.get(group)
        path = _find(f"{group}/{option}.yaml", folders) if option else None
        lead, notes = yaml_comments(path) if path else ("", {})
        target = (job[group] or {}).get("_target_", "")
        options = ", ".join(_options(group, folders))
        title = f"{group}={option} (options: {options}): {lead or target}"
        rows = _group_lines(group, job[group] or {}, notes, f"an argument of {target}")
        sections.append(_section(title, rows))
    sections.append(FLAGS)
    return "\n\n".join(sections)


def _section(title: str, rows: list[tuple[str, str]]) -> str:
    width = min(max((len(k) for k, _ in rows), default=0), 32)
    lines = [title]
    for key, note in rows:
        pad = " " * max(width - len(key), 0)
        lines.append(f"  {key}{pad}  {note}".rstrip())
    return "\n".join(lines)
