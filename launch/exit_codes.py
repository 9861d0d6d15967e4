"""The launcher's exit codes, shared by the default recipe's ranks.

========  ===================================================================
``0``     done
``1``     failed (a rank raised, died or hung; the summary says which)
``2``     bad input: nothing was started (a bad value, a busy run folder)
``75``    stopped with a checkpoint saved (SIGTERM, SIGHUP, a first Ctrl-C),
          or ranks that exited 75 themselves: run the printed command again
          to resume
``130``   interrupted without a checkpoint for this stop (a second Ctrl-C,
          a stop before the ranks started, a job that saves none: scripts,
          entrypoints, ranks still running when the grace ran out)
========  ===================================================================
"""

DONE = 0
FAILED = 1
BAD_INPUT = 2
PREEMPTED = 75  # distengine.handlers.preemption.EXIT_PREEMPTED (a test keeps them equal)
INTERRUPTED = 130
