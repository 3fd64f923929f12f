"""The sweeper's decisions as given/when/then: given a job's events, when swept at a time with
what the queue holds, then a requeue, a final failure, or nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain import events as ev
from domain.jobs import result_ids
from domain.sweep import Deadlines, JobEvent, QueueView, decision_ids, progress, sweep

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB = "0b6c1f0e-5d1a-5b7e-9c43-2f1d7a6e9b10"
LIMITS = Deadlines(start_seconds=300, run_seconds=120, max_tries=3, max_requeues=2)
HELD = QueueView(holds_job=True, workers_alive=True)
LOST = QueueView(holds_job=False, workers_alive=True)
NOBODY = QueueView(holds_job=True, workers_alive=False)


def given(*events: tuple[int, ev.Event]) -> list[JobEvent]:
    """A job's history: its request at T0 (position 10), then (seconds later, event) pairs."""
    request = ev.JobRequested(job_id=JOB, kind="compile", name="fraud", version=1)
    history = [JobEvent(request, T0, 10)]
    for offset, (seconds, event) in enumerate(events, start=11):
        history.append(JobEvent(event, T0 + timedelta(seconds=seconds), offset))
    return history


def started(attempt: int) -> ev.JobStarted:
    return ev.JobStarted(job_id=JOB, kind="compile", name="fraud", attempt=attempt)


def failed(attempt: int, *, final: bool) -> ev.JobFailed:
    return ev.JobFailed(
        job_id=JOB, kind="compile", name="fraud", attempt=attempt, error="boom", final=final
    )


def requeued(requeues: int, attempts: int = 0) -> ev.JobRequeued:
    return ev.JobRequeued(
        job_id=JOB,
        kind="compile",
        name="fraud",
        requested_position=10,
        attempts=attempts,
        reason="lost",
        requeues=requeues,
    )


def when(
    history: list[JobEvent],
    at_seconds: float,
    queue: QueueView | None = HELD,
    *,
    relayed: bool = True,
) -> list[ev.Event]:
    now = T0 + timedelta(seconds=at_seconds)
    return sweep(progress(history), now=now, deadlines=LIMITS, relayed=relayed, queue=queue)


def test_a_queued_job_that_workers_will_take_is_left_alone_however_long_it_waits() -> None:
    assert when(given(), 10_000) == []


def test_a_job_whose_queue_entry_was_lost_is_requeued_at_once() -> None:
    [event] = when(given(), 1, LOST)
    assert isinstance(event, ev.JobRequeued)
    assert (event.attempts, event.requeues, event.requested_position) == (0, 1, 10)
    assert "lost" in event.reason


def test_nothing_is_judged_before_the_dispatcher_relayed_it_or_while_redis_is_away() -> None:
    assert when(given(), 1, LOST, relayed=False) == []
    assert when(given(), 10_000, None) == []


def test_with_no_worker_alive_a_job_is_requeued_after_the_start_deadline_then_failed() -> None:
    assert when(given(), 299, NOBODY) == []
    [first] = when(given(), 301, NOBODY)
    assert isinstance(first, ev.JobRequeued) and "no worker started it" in first.reason
    history = given((301, requeued(1)), (602, requeued(2)))
    assert when(history, 900, NOBODY) == []
    [final] = when(history, 903, NOBODY)
    assert isinstance(final, ev.JobFailed) and final.final
    assert final.error.startswith("never started: no worker started it within 300 s")
    assert final.details == {"requeues": 2, "swept": True}


def test_an_attempt_with_no_outcome_past_its_deadline_is_requeued_as_the_next_attempt() -> None:
    history = given((5, started(1)))
    assert when(history, 125, LOST) == []
    [event] = when(history, 126, LOST)
    assert isinstance(event, ev.JobRequeued)
    assert (event.attempts, event.requeues) == (1, 1)
    assert "attempt 1 had no outcome" in event.reason


def test_an_overdue_attempt_is_judged_even_while_redis_is_away() -> None:
    [event] = when(given((5, started(1))), 200, None)
    assert isinstance(event, ev.JobRequeued)


def test_the_last_attempt_overdue_fails_the_job() -> None:
    history = given(
        (5, started(1)),
        (10, failed(1, final=False)),
        (20, started(2)),
        (30, failed(2, final=False)),
        (60, started(3)),
    )
    [event] = when(history, 200)
    assert isinstance(event, ev.JobFailed) and event.final and event.attempt == 3
    assert event.error.startswith("gave up after 3 attempts")


def test_a_finished_job_is_never_touched() -> None:
    done = ev.JobSucceeded(job_id=JOB, kind="compile", name="fraud", attempt=1, seconds=1.0)
    assert when(given((5, started(1)), (6, done)), 10_000, LOST) == []
    assert when(given((5, started(1)), (6, failed(1, final=True))), 10_000, LOST) == []


def test_a_failed_attempt_waits_its_backoff_before_the_start_deadline_counts() -> None:
    history = given((5, started(1)), (10, failed(1, final=False)))
    standing = progress(history)
    assert not standing.running and standing.attempts == 1
    assert standing.since == T0 + timedelta(seconds=12)  # 2 s of backoff after attempt 1
    assert when(history, 311, NOBODY) == []
    assert len(when(history, 313, NOBODY)) == 1


def test_a_start_resets_the_requeue_count() -> None:
    history = given((1, requeued(1)), (2, requeued(2)), (3, started(1)))
    assert progress(history).requeues == 0
    history = given(
        (1, requeued(1)), (2, requeued(2)), (3, started(1)), (5, failed(1, final=False))
    )
    [event] = when(history, 8, LOST)
    assert isinstance(event, ev.JobRequeued) and event.requeues == 1


def test_a_late_start_of_an_earlier_attempt_does_not_count_as_running() -> None:
    history = given((5, started(2)), (6, failed(2, final=False)), (7, started(1)))
    standing = progress(history)
    assert (standing.attempts, standing.running) == (2, False)


def test_decision_ids_are_fixed_by_the_state_and_a_failure_takes_the_outcome_id() -> None:
    history = given((5, started(1)))
    events = when(history, 200)
    assert decision_ids(progress(history), events) == decision_ids(progress(history), events)
    later = given((5, started(1)), (200, requeued(1, attempts=1)))
    assert decision_ids(progress(later), events) != decision_ids(progress(history), events)
    last = given((5, started(3)))
    final = when(last, 200)
    assert decision_ids(progress(last), final) == result_ids(JOB, "result", 1)
