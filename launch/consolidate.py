"""``python -m launch.consolidate <folder> <out.pt>``: a sharded checkpoint as one file.

For inference or sharing: the folder a sharded (FSDP) run wrote is verified
against its manifest and written as one ``torch.save`` file with full tensors
(``torch.load(out, weights_only=True)``). ``--entry model`` writes only the
model's state dict (``model.load_state_dict(torch.load(out))``). One process,
no process group, no GPU. Exit codes: 0 written, 2 bad input (nothing written).

Example::

    python -m launch.consolidate outputs/exp1/checkpoints/checkpoint_176 model.pt --entry model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launch import exit_codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launch.consolidate",
        description="Write a sharded checkpoint folder as one torch.save file with full tensors.",
    )
    parser.add_argument("folder", type=Path, help="a sharded checkpoint folder (has manifest.json)")
    parser.add_argument("out", type=Path, help="the file to write, e.g. model.pt")
    parser.add_argument(
        "--entry", default=None, help="write only this entry (e.g. model), not the whole checkpoint"
    )
    args = parser.parse_args(argv)
    from distengine.checkpoint import consolidate

    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return exit_codes.BAD_INPUT
    try:
        out = consolidate(args.folder, args.out, entry=args.entry)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    print(f"wrote {out}")
    return exit_codes.DONE


if __name__ == "__main__":
    sys.exit(main())
