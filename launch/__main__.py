"""Entry point of ``python -m launch``."""

import gc

from launch.job.signals import stop_early

stop_early()  # before the slow imports: a stop signal there is a clean stop too (exit 130)

from launch.cli import main  # noqa: E402

if __name__ == "__main__":
    try:
        main()
    finally:
        # The launcher holds torch's millions of objects: without this, the collection at
        # interpreter exit walks them all (about a second per launch on a laptop core).
        gc.freeze()
