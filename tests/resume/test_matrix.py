"""The resume matrix: every configuration, stopped at several iterations, resumes bit for bit.

World size 1 runs in the test process (no process group), 2 and 3 on gloo
ranks; one call per configuration covers every stop (see scenario.py).
"""

import pytest

from tests.resume.scenario import CONFIGS, RANK_STOPS, STOPS, resume_matrix


@pytest.mark.parametrize("world_size", [1, 2, 3], ids=lambda w: f"{w}rank")
@pytest.mark.parametrize("config", CONFIGS)
def test_resume_equals_the_uninterrupted_run_bitwise(config, world_size, pools, request):
    if world_size == 1:
        request.getfixturevalue("cpu_only")  # one CPU process, also where CUDA is visible
        stops, found = STOPS, [resume_matrix(config, STOPS)]
    else:
        stops = RANK_STOPS
        found = pools.get(world_size).run(resume_matrix, config, stops, timeout=300)
    for rank, differences in enumerate(found):
        where = f"rank {rank} of {world_size}, stops {stops}:\n"
        assert differences == [], where + "\n".join(differences)
