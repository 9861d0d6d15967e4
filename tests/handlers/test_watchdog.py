"""HangWatchdog in a subprocess: a stalled loop is dumped and killed, a steady one is not."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time
    from distengine.engine import Engine
    from distengine.handlers import HangWatchdog

    stall = float(sys.argv[1])

    def step(engine, batch):
        time.sleep(stall if engine.state.iteration == 20 else 0.01)

    engine = Engine(step)
    HangWatchdog(timeout_s=1.0).attach(engine)
    engine.run(range(150))
    print("finished")
""")


def run(stall: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(stall)], capture_output=True, text=True, timeout=60
    )


def test_a_stalled_iteration_dumps_the_stack_and_exits():
    done = run(stall=30)
    assert done.returncode != 0 and "finished" not in done.stdout
    assert "Timeout (0:00:01)!" in done.stderr and "in step" in done.stderr


def test_steady_progress_longer_than_the_timeout_is_not_a_hang():
    done = run(stall=0.01)  # 150 x 10 ms outlasts the 1 s timeout: only re-arming saves it
    assert done.returncode == 0 and "finished" in done.stdout


SUSPENDED = textwrap.dedent("""
    import time
    from distengine.engine import Engine
    from distengine.handlers import HangWatchdog
    from distengine.handlers.watchdog import suspended

    def step(engine, batch):
        if engine.state.iteration == 5:
            with suspended():      # a long checkpoint write: 2.5 timeouts
                time.sleep(2.5)
        time.sleep(0.01)

    engine = Engine(step)
    HangWatchdog(timeout_s=1.0).attach(engine)
    engine.run(range(20))
    print("finished")
""")


def test_a_suspended_block_longer_than_the_timeout_is_not_a_hang():
    done = subprocess.run(
        [sys.executable, "-c", SUSPENDED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr
