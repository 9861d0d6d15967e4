"""Consensus: one answer on every rank, and a board that agrees without waiting."""

import pytest
import torch

import distengine.distributed as idist
from distengine.engine.board import Board


def rank_dependent_answers():
    r, n = idist.get_rank(), idist.get_world_size()
    last = r == n - 1
    return {
        "any_last": idist.any_rank(last),
        "any_none": idist.any_rank(torch.tensor(False)),
        "all_last": idist.all_ranks(last),
        "all_true": idist.all_ranks(torch.tensor(1.0)),
        "agree": idist.agree({"last": torch.tensor(last), "never": False, "zero": r == 0}),
        "decide_float": idist.decide(0.5 + r),
        "decide_int": idist.decide(7 + r),
        "decide_tuple": idist.decide((10 * r, None if r == 0 else 1.5, r == 0)),
        "decide_tensor": idist.decide(torch.full((2,), float(r)), src=n - 1).tolist(),
        "decide_object": idist.decide({"rank": r}, src=1),
        "decide_exact": idist.decide((2**53 + 1 + r, 2**63 - 1 - r, -(2**63) + r, -0.0, 0.1 + r)),
        "decide_huge": idist.decide([2**70 + r, 1.5]),
    }


def test_every_rank_gets_the_same_answer(ranks):
    n = ranks.world_size
    expected = {
        "any_last": True,
        "any_none": False,
        "all_last": False,
        "all_true": True,
        "agree": {"last": True, "never": False, "zero": True},
        "decide_float": 0.5,
        "decide_int": 7,
        "decide_tuple": (0, None, True),
        "decide_tensor": [float(n - 1)] * 2,
        "decide_object": {"rank": 1},
        "decide_exact": (2**53 + 1, 2**63 - 1, -(2**63), -0.0, 0.1),
        "decide_huge": [2**70, 1.5],
    }
    results = ranks.run(rank_dependent_answers)
    assert results == [expected] * n
    assert all(type(r["decide_int"]) is int for r in results)
    assert all(str(r["decide_exact"][3]) == "-0.0" for r in results)  # every bit of a float


def decide_counted(value):
    import torch.distributed as dist

    calls = []
    originals = {name: getattr(dist, name) for name in ("broadcast", "broadcast_object_list")}
    for name, fn in originals.items():
        setattr(dist, name, lambda *a, fn=fn, **k: calls.append(1) or fn(*a, **k))
    try:
        agreed = idist.decide(value)
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    return agreed, len(calls)


def test_decide_keeps_src_types_and_costs_one_tiny_broadcast(ranks2):
    value = (True, 3, 2.5, None, 2**62 + 1)
    assert ranks2.run(decide_counted, value) == [(value, 1)] * 2
    assert ranks2.run(decide_counted, float("inf")) == [(float("inf"), 1)] * 2
    assert ranks2.run(decide_counted, 2**64) == [(2**64, 2)] * 2  # beyond 64 bits: a second


def test_one_process_answers_from_the_local_value():
    assert idist.any_rank(True) and not idist.any_rank(torch.tensor(0))
    assert idist.all_ranks(torch.tensor(True)) and not idist.all_ranks(False)
    assert idist.agree({"a": True, "b": torch.tensor(False)}) == {"a": True, "b": False}
    assert idist.decide((3, None)) == (3, None)


# ------------------------------------------------------------------------------ the board
class Recorder:
    def __init__(self, board):
        self.board, self.events = board, []

    def flag(self, key, every, poll=None):
        self.board.flag(key, every, lambda: self.events.append((self.k, key)), poll=poll)

    def value(self, key, every, poll):
        self.board.value(key, every, poll, lambda v: self.events.append((self.k, key, v)))

    def run(self, steps, posts=(), first=1, last=None, epoch_ends=()):
        self.board.start(first, last)
        for k in steps:
            self.k = k
            for when, key, flag in posts:
                if when == k:
                    self.board.post(key, flag)
            self.board.step(k)
            if k in epoch_ends:
                self.board.flush(k)
        self.k = "end"
        self.board.settle()
        return self.events


def test_board_exchanges_at_agreed_iterations_and_delivers_one_later():
    board = Board()
    rec = Recorder(board)
    rec.flag("nan", every=4)
    rec.flag("stop", every=6, poll=lambda: rec.k >= 9)
    rec.value("loss", every=4, poll=lambda: float(rec.k))
    posts = [(2, "nan", torch.tensor(True)), (3, "nan", torch.tensor(False))]
    events = rec.run(range(1, 14), posts=posts, last=13)
    # exchanges at 1 (the run's first: every slot), 4, 6, 8, 12 (the slots due there only);
    # each read at the next iteration
    assert events == [
        (2, "loss", 1.0),
        (5, "nan"),  # posted at 2 (a device flag), OR-ed with 3's, exchanged at 4
        (5, "loss", 4.0),
        (9, "loss", 8.0),  # 6 exchanged "stop" only
        (13, "stop"),  # polled at 12
        (13, "loss", 12.0),
    ]
    assert board.exchanges == 5
    assert board.as_of("loss") is None  # a value without a name


def test_a_named_value_says_which_iteration_it_holds_for():
    board = Board()
    seen = []
    board.value("k", every=1, poll=lambda: float(k), on_agree=seen.append, name="kk")
    board.start(1, 5)
    for k in range(1, 6):
        board.read(k)
        seen.append(("as of", board.as_of("kk")))
        board.launch(k)
    board.complete(5)  # the exchange of the last iteration is read: fresh, no flush
    delivered = [1.0, ("as of", 1), 2.0, ("as of", 2), 3.0, ("as of", 3), 4.0, ("as of", 4)]
    assert seen == [("as of", None), *delivered, 5.0]
    assert board.as_of("kk") == 5 and board.exchanges == 5


def test_a_flush_exchanges_at_once_and_no_exchange_starts_at_the_last_iteration():
    board = Board()
    rec = Recorder(board)
    rec.flag("nan", every=5)
    events = rec.run(range(1, 11), posts=[(3, "nan", True)], last=10, epoch_ends=(4, 8))
    assert events == [(4, "nan")]  # flushed at 4, not waiting for 5
    assert board.exchanges == 1 + 2 + 2  # first, two flushes, 5 and 10 (read at the end)


def test_board_values_absent_on_every_rank_are_not_delivered_and_slots_can_go():
    board = Board()
    rec = Recorder(board)
    rec.value("v", every=1, poll=lambda: None)
    rec.flag("f", every=1, poll=lambda: True)
    board.remove("f")
    assert rec.run(range(1, 4), last=3) == []
    with pytest.raises(ValueError, match="every must be a positive int"):
        board.flag("g", every=0, on_agree=lambda: None)


def uneven_board(length_of):
    """Each rank steps its own number of iterations; flags raised late on the longest."""
    r = idist.get_rank()
    board = Board()
    seen = []
    board.flag("f", every=1, on_agree=lambda: seen.append(k), poll=lambda: k >= 3)
    last = length_of[r]
    board.start(1, last)
    for k in range(1, last + 1):
        board.step(k)
    board.complete(last)  # the end of the run: every rank's, at a different iteration
    return seen, board.exchanges


def test_board_uses_only_iterations_every_rank_reaches(ranks):
    lengths = [9, 4, 6][: ranks.world_size]
    results = ranks.run(uneven_board, lengths, timeout=30)  # a mismatch would hang
    shortest = min(lengths)
    for (seen, exchanges), length in zip(results, lengths):
        # exchanged 1 to 4 (the shortest's last); 3 and 4 raise it, read at 4 and 5 (the
        # shortest reads 4's when its run ends); no value: no exchange at the end
        assert seen == [4, min(5, length)]
        assert exchanges == shortest


def test_a_timed_board_exchanges_about_every_interval_by_rank_0s_clock():
    now = [0.0]
    board = Board(interval_s=0.5, clock=lambda: now[0])
    Recorder(board).flag("f", every=None)
    board.start(1, None)
    launched = []
    for k in range(1, 261):
        now[0] += 1 / 64 if k <= 200 else 1.0  # 64 iterations a second, then one
        exchanges = board.exchanges
        board.step(k)
        if board.exchanges > exchanges:
            launched.append(k)
    # a gap grows at most 16-fold per exchange, to half a second (32 fast iterations)
    assert launched[:6] == [1, 17, 49, 81, 113, 145]
    assert launched[-20:] == list(range(241, 261))  # slow iterations: every one
