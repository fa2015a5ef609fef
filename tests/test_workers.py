"""lmsav.workers on its own: jobs with descriptors, generations, a crash, stopping."""

from __future__ import annotations

import os
import selectors
import signal
import tempfile
import time

from lmsav.workers import Worker, WorkerPool


class Echo:
    """Answers (pid, job, what the passed descriptor holds); "die" kills the worker."""

    def __init__(self, tag: str):
        self.tag = tag

    def run_job(self, job, fds):
        if job == "die":
            os._exit(3)
        if isinstance(job, tuple) and job[0] == "sleep":
            time.sleep(job[1])
        data = os.pread(fds[0], 100, 0) if fds else b""
        return (os.getpid(), self.tag, job, data)

    def close(self):
        pass


def _answers(pool: WorkerPool, sel, count: int, timeout: float = 10) -> list:
    got, dead = [], []
    deadline = time.monotonic() + timeout
    while len(got) + len(dead) < count and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            assert isinstance(key.data, Worker)
            answers = pool.read(key.data)
            if answers is None:
                dead.append((key.data, pool.died(key.data)))
            else:
                got += [result for _job, result in answers]
    return got + dead


def test_jobs_generations_crash_and_stop():
    sel = selectors.DefaultSelector()
    state = {"tag": "first"}
    pool = WorkerPool(2, lambda: Echo(state["tag"]), sel)
    pool.start()
    try:
        assert len(pool.idle()) == 2
        with tempfile.TemporaryFile() as fh:
            fh.write(b"passed along")
            fh.flush()
            worker = pool.idle()[0]
            pool.send(worker, "job-1", "payload-1", [os.dup(fh.fileno())])
        assert pool.busy() == [worker] and len(pool.idle()) == 1
        [(pid, tag, job, data)] = _answers(pool, sel, 1)
        assert (pid, tag, job, data) == (worker.pid, "first", "payload-1", b"passed along")
        assert worker.job is None

        # A new generation: the busy worker finishes its job first, then goes.
        busy = pool.idle()[0]
        pool.send(busy, "slow", "before-reload")
        state["tag"] = "second"
        pool.new_generation(3)
        assert len(pool.idle()) == 3 and busy.retiring and busy.pid in pool.workers
        [(pid, tag, _job, _data)] = _answers(pool, sel, 1)
        assert (pid, tag) == (busy.pid, "first") and busy.pid not in pool.workers
        for w in pool.idle():
            pool.send(w, w.pid, "after")
        assert {tag for _pid, tag, _j, _d in _answers(pool, sel, 3)} == {"second"}

        # A worker that dies is replaced, and its job handed back.
        victim = pool.idle()[0]
        pool.send(victim, "the job", "die")
        [(dead, job)] = _answers(pool, sel, 1)
        assert dead is victim and job == "the job" and victim.exit_status == "exit 3"
        assert len(pool.idle()) == 3 and victim.pid not in pool.workers
    finally:
        pids = set(pool.pids)
        pool.stop(10)
    assert not pool.pids and not pool.workers
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker {pid} still runs")


def test_stop_collects_the_answer_of_a_job_in_flight():
    sel = selectors.DefaultSelector()
    pool = WorkerPool(1, lambda: Echo("x"), sel)
    pool.start()
    worker = pool.idle()[0]
    pool.send(worker, "in flight", "last")
    collected = []
    pool.stop(10, on_result=lambda w, job, result: collected.append((job, result[2])))
    assert collected == [("in flight", "last")]
    assert not pool.pids


def test_died_reports_the_exit_status_an_earlier_reap_collected():
    """The daemon reaps on SIGCHLD and every half second, often before it reads the EOF of
    the dead worker's socket: died() still says how the worker ended."""
    sel = selectors.DefaultSelector()
    pool = WorkerPool(1, lambda: Echo("x"), sel)
    pool.start()
    try:
        victim = pool.idle()[0]
        pool.send(victim, "the job", "die")
        deadline = time.monotonic() + 10
        while victim.pid in pool.pids and time.monotonic() < deadline:
            pool.reap()
            time.sleep(0.02)
        assert victim.pid not in pool.pids and victim.exit_status == "exit 3"
        assert pool.read(victim) is None
        assert pool.died(victim) == "the job" and victim.exit_status == "exit 3"
        assert len(pool.idle()) == 1 and victim.pid not in pool.workers
    finally:
        pool.stop(10)


def test_stop_waits_for_a_slow_job_and_collects_its_answer():
    """stop() waits up to its timeout for a job in hand: an answer that comes after the first
    poll is still collected, not taken for a dead worker."""
    sel = selectors.DefaultSelector()
    pool = WorkerPool(2, lambda: Echo("x"), sel)
    pool.start()
    slow, quick = pool.idle()
    pool.send(slow, "slow", ("sleep", 2))
    pool.send(quick, "quick", ("sleep", 0.7))
    collected = []
    pool.stop(10, on_result=lambda w, job, result: collected.append((w, job, result[2])))
    assert sorted(collected, key=lambda c: c[1]) == [
        (quick, "quick", ("sleep", 0.7)), (slow, "slow", ("sleep", 2))]
    assert slow.exit_status == "exit 0" and quick.exit_status == "exit 0"
    assert not pool.pids and not pool.workers


def test_stop_collects_the_answer_of_a_retiring_worker():
    sel = selectors.DefaultSelector()
    pool = WorkerPool(1, lambda: Echo("x"), sel)
    pool.start()
    old = pool.idle()[0]
    pool.send(old, "before reload", ("sleep", 0.7))
    pool.new_generation()
    assert old.retiring and old.pid in pool.workers
    collected = []
    pool.stop(10, on_result=lambda w, job, result: collected.append((w, job)))
    assert collected == [(old, "before reload")] and old.exit_status == "exit 0"
    assert not pool.pids and not pool.workers


def test_stop_kills_what_outlasts_the_timeout():
    sel = selectors.DefaultSelector()
    pool = WorkerPool(1, lambda: Echo("x"), sel)
    pool.start()
    worker = pool.idle()[0]
    pool.send(worker, "endless", ("sleep", 60))
    collected = []
    started = time.monotonic()
    pool.stop(1, on_result=lambda w, job, result: collected.append(job))
    assert time.monotonic() - started < 10
    assert collected == [] and worker.exit_status == "signal SIGKILL"
    assert not pool.pids and not pool.workers


def test_ignores_the_signals_the_parent_handles():
    sel = selectors.DefaultSelector()
    pool = WorkerPool(1, lambda: Echo("x"), sel)
    pool.start()
    worker = pool.idle()[0]
    pool.send(worker, "up", "first")  # answered: its signal handlers are in place
    assert len(_answers(pool, sel, 1)) == 1
    os.kill(worker.pid, signal.SIGTERM)
    os.kill(worker.pid, signal.SIGHUP)
    pool.send(worker, "still there", "ping")
    [(pid, _tag, job, _data)] = _answers(pool, sel, 1)
    assert (pid, job) == (worker.pid, "ping")
    pool.stop(10)
