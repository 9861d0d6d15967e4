"""A plain DDP-style script: makes its own process group, as under torchrun."""

import json
import sys
from pathlib import Path

import torch

import distengine.distributed as idist

idist.initialize()
total = idist.all_reduce(torch.tensor([idist.get_rank() + 1.0])).item()
Path(sys.argv[1], f"script{idist.get_rank()}.json").write_text(
    json.dumps(
        {
            "rank": idist.get_rank(),
            "world": idist.get_world_size(),
            "sum": total,
            "args": sys.argv[2:],
        }
    )
)
idist.finalize()
