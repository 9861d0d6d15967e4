"""A DDP-style script whose rank 1 leaves early (``exit``) or stalls (``sleep``)."""

import sys
import time

import torch

import distengine.distributed as idist

idist.initialize()  # the launcher's dist.timeout_s reaches the process group
if idist.get_rank() == 1:
    if sys.argv[1] == "exit":
        sys.exit(0)
    time.sleep(3600)
idist.all_reduce(torch.ones(1))  # rank 0 waits here for rank 1
