"""Task claims and recent answers shared by the backend's workers (backend/task_claims.py)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from backend import task_claims
from backend.task_claims import TaskClaims, shared_claims_file


def test_a_claim_takes_unowned_tasks_in_order_up_to_the_limit_until_released() -> None:
    claims = TaskClaims()

    assert claims.claim(7, [3, 1, 2, 1], limit=2) == ([3, 1], 1)
    assert claims.claim(7, [1, 2, 4], limit=10) == ([2, 4], 0)
    assert claims.owned(7, [1, 2, 3, 4, 5]) == {1, 2, 3, 4}
    assert claims.owned(8, [1, 2]) == set()  # per project
    assert claims.owned(7, ["1"]) == set()  # the string id "1" is another task

    claims.release(7, [1, 3])

    assert claims.owned(7, [1, 2, 3, 4]) == {2, 4}
    assert claims.claim(7, [1, 2], limit=10) == ([1], 0)


def test_an_answer_is_settling_for_settle_s_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(task_claims.time, "time", lambda: now[0])
    claims = TaskClaims(settle_s=300)
    claims.note_answered(1, [10, 11])

    now[0] += 299
    assert claims.settling(1, [10, 11, 12]) == {10, 11}
    assert claims.settling(2, [10]) == set()
    now[0] += 2
    assert claims.settling(1, [10, 11]) == set()


def _claim_and_hold(path: str, claimed: multiprocessing.Event, stop: multiprocessing.Event) -> None:
    """Another worker: claims tasks 1 and 2 of project 5, then stays alive until told to stop."""
    TaskClaims(path).claim(5, [1, 2], limit=10)
    claimed.set()
    stop.wait(30)


def test_claims_of_another_live_process_count_and_those_of_a_dead_one_do_not(tmp_path: Path) -> None:
    path = str(tmp_path / "claims.sqlite3")
    context = multiprocessing.get_context("spawn")
    claimed, stop = context.Event(), context.Event()
    other = context.Process(target=_claim_and_hold, args=(path, claimed, stop))
    other.start()
    try:
        assert claimed.wait(60)
        mine = TaskClaims(path)

        assert mine.owned(5, [1, 2, 3]) == {1, 2}
        assert mine.claim(5, [1, 2, 3], limit=10) == ([3], 0)
        mine.release(5, [1])  # only the claimant releases
        assert mine.owned(5, [1]) == {1}
    finally:
        stop.set()
        other.join(30)

    assert mine.owned(5, [1, 2, 3]) == {3}
    assert mine.claim(5, [1, 2], limit=10) == ([1, 2], 0)


def test_one_worker_keeps_its_claims_in_memory_and_several_share_one_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set (empty, meaning unset) through monkeypatch, so that the path the call exports is undone after.
    monkeypatch.setenv(task_claims.CLAIMS_FILE_VARIABLE, "")
    assert shared_claims_file(1) == ":memory:"

    path = shared_claims_file(4)
    try:
        assert os.environ[task_claims.CLAIMS_FILE_VARIABLE] == path and Path(path).is_file()
        assert shared_claims_file(4) == path  # what a forked worker finds
    finally:
        Path(path).unlink()
