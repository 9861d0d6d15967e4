"""What every rank runs: one entry for the recipe, a script and an entrypoint."""

from launch.rank.entry import main, run_in_place

__all__ = ["main", "run_in_place"]
