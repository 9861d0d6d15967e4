"""Entry point of ``python -m launch``."""

import gc

from launch.cli import main

if __name__ == "__main__":
    try:
        main()
    finally:
        # The launcher holds torch's millions of objects: without this, the collection at
        # interpreter exit walks them all (about a second per launch on a laptop core).
        gc.freeze()
