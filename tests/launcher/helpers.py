"""A DDP-style script whose ranks start ``sleep`` helper processes, then fail or wait.

``helpers.py <run dir> <mode>``: every rank joins the process group, starts two
``sleep`` helpers and records their pids in ``helpers<rank>-<attempt>``; then
with ``fail-once`` rank 1 raises on the first attempt (the others wait in a
collective) and every rank waits for a stop on the next; with ``fail`` rank 1
raises on every attempt; ``alone`` joins no group at all and returns.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import distengine.distributed as idist

run_dir, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "alone":
    sys.exit(0)
idist.initialize()
rank, attempt = idist.get_rank(), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
helpers = [subprocess.Popen(["sleep", "1000"]) for _ in range(2)]
(run_dir / f"helpers{rank}-{attempt}").write_text(" ".join(str(h.pid) for h in helpers))
if rank == 1 and (mode == "fail" or attempt == 0):
    raise ValueError("rank 1 fails after starting its helpers")
if mode == "fail" or attempt == 0:
    idist.all_reduce(torch.ones(1))  # waits for rank 1, which failed
(run_dir / f"waiting{rank}").write_text(str(os.getpid()))
while True:
    time.sleep(0.1)
