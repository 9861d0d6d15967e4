"""Entry point of ``python -m launch``."""

from launch.cli import main

if __name__ == "__main__":
    main()
