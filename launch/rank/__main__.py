"""``python -m launch.rank <config.yaml>``: a rank started as a new process (spawn, GPUs).

torch's ``record`` writes the rank's exception to its error file, which the
launcher's failure summary reads.
"""

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from launch.rank.entry import main

if __name__ == "__main__":
    record(main)(sys.argv[1])
