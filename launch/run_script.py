"""``python -m launch.run_script script.py args``: a rank that runs a user's script.

Used when ranks are started as new processes (spawn, e.g. with GPUs): the
rank dies with its launcher, then runs the script as its ``__main__``.
"""

import sys

from launch.worker import run_script

if __name__ == "__main__":
    run_script(*sys.argv[1:])
