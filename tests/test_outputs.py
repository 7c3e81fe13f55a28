"""Dumps and checkpoints written off the loop (issue 13 item 4), without root.

A real table, real DumpWriter writing real files into tmp_path, the real worker
thread. The only test device is a writer that pauses at its first progress
callback (the first piece is written) until the test lets it go, so every
"meanwhile" below happens while a write is provably in flight, not after a
sleep.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ncebpf import checkpoint
from ncebpf.accounting import PeerTable, TableSnapshot, Totals, peer_key
from ncebpf.config import Instance
from ncebpf.control import DumpClient
from ncebpf.dump import DumpContext
from ncebpf.dumpfiles import DumpWriter, Progress
from ncebpf.outputs import (
    PROGRESS_EVERY_S,
    Checkpointer,
    ControlWaiter,
    DumpService,
    WrittenDump,
)
from ncebpf.worker import Outcome, Worker


class PausingWriter(DumpWriter):
    """A DumpWriter whose write, once its first piece is out, tells the test (`paused`)
    and waits for a permit (`go`): the rest of the dump is written after that."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(instance, DumpContext(instance.name, "veth0", "xdp"))
        self.paused: queue.Queue[int] = queue.Queue()  # the peers of each write that paused
        self.go = threading.Semaphore(0)
        self.writes = 0
        RELEASES.append(lambda: self.go.release(100))

    def write(self, table: PeerTable | TableSnapshot, now: float, progress: Progress) -> Path:
        self.writes += 1
        waiting = True

        def pausing(done: int, total: int) -> None:
            nonlocal waiting
            progress(done, total)
            if waiting:
                waiting = False
                self.paused.put(total)
                self.go.acquire()
        return super().write(table, now, pausing)

    def wait_paused(self) -> int:
        return self.paused.get(timeout=60)  # a hang, not a measurement


class Waiter:
    """Records what a DumpWaiter hears, in order."""

    via = "control"

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []

    def progress(self, done: int, total: int) -> None:
        self.heard.append(("progress", (done, total)))

    def written(self, dump: WrittenDump) -> None:
        self.heard.append(("written", dump))

    def failed(self, error: str) -> None:
        self.heard.append(("failed", error))

    @property
    def answers(self) -> list[tuple[str, Any]]:
        return [h for h in self.heard if h[0] != "progress"]


class Drains:
    """The daemon's drain before each snapshot: here, counted."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    (tmp_path / "state").mkdir()
    return Instance("t", tmp_path / "state", tmp_path)


@pytest.fixture
def worker() -> Iterator[Worker]:
    with Worker() as running:
        yield running
        for release in RELEASES:  # a failed test must not leave the worker stuck
            release()
        RELEASES.clear()


RELEASES: list[Callable[[], None]] = []


def table_of(*peers: tuple[str, int]) -> PeerTable:
    table = PeerTable(start=1000)
    for address, packets in peers:
        table.add(peer_key(address), packets, 100 * packets, 1001, 1001)
    table.totals = Totals(packets=sum(p for _, p in peers))
    return table


def finish(worker: Worker) -> None:
    """What the loop does when the worker's fd wakes it, once the worker is done."""
    assert worker.wait(60)
    worker.collect()


def peers_in(instance: Instance) -> dict[str, int]:
    document = json.loads(instance.json_path.read_text())
    return {address: peer["packets"] for address, peer in document["peers"].items()}


def test_the_loop_goes_on_while_a_dump_is_written_and_late_askers_share_the_next(
        instance: Instance, worker: Worker) -> None:
    table = table_of(("10.77.0.1", 3))
    writer, drains = PausingWriter(instance), Drains()
    dumps = DumpService(writer, worker, table, drains)
    first, second, third = Waiter(), Waiter(), Waiter()
    dumps.ask(first)
    dumps.service(0.0)
    assert writer.wait_paused() == 1 and dumps.writing and drains.count == 1

    # Meanwhile, on the loop: a drain counts a new peer, two more clients ask, the loop
    # turns again. Nothing waits for the write.
    table.add(peer_key("10.77.0.2"), 5, 500, 1002, 1002)
    dumps.ask(second)
    dumps.ask(third)
    dumps.service(0.0)
    worker.collect()
    assert writer.writes == 1 and first.heard == [] and drains.count == 1

    writer.go.release()
    finish(worker)
    (answer,) = first.answers
    assert answer == ("written", WrittenDump(instance.statedir, answer[1].current))
    assert peers_in(instance) == {"10.77.0.1": 3}  # the table at first's request
    assert second.answers == third.answers == []  # their dump comes next

    dumps.service(0.0)
    assert writer.wait_paused() == 2 and drains.count == 2
    writer.go.release()
    finish(worker)
    assert second.answers == third.answers and len(second.answers) == 1
    assert second.answers[0][1].current >= answer[1].current
    assert peers_in(instance) == {"10.77.0.1": 3, "10.77.0.2": 5}
    assert writer.writes == 2  # three requests, two dumps: the late ones shared one
    assert not dumps.writing and dumps.last_written == second.answers[0][1].current


def test_waiters_hear_progress_while_they_wait_for_this_dump_or_the_next(
        instance: Instance, worker: Worker) -> None:
    table = table_of(("10.77.0.1", 1), ("10.77.0.2", 1), ("fd77::3", 1))
    writer = PausingWriter(instance)
    dumps = DumpService(writer, worker, table, Drains())
    current, later = Waiter(), Waiter()
    dumps.ask(current)
    dumps.service(0.0)
    writer.wait_paused()
    dumps.ask(later)
    deadline = dumps.next_deadline()
    assert deadline is not None
    dumps.service(deadline + PROGRESS_EVERY_S)
    # The worker may have told them too, if its first piece came late (a loaded machine).
    assert set(current.heard) == set(later.heard) == {("progress", (0, 3))}
    writer.go.release()
    finish(worker)
    dumps.service(0.0)
    writer.wait_paused()
    writer.go.release()
    finish(worker)
    assert [h[0] for h in later.heard] == ["progress", "written"]


def test_waiters_hear_a_line_while_the_loop_is_busy_during_and_between_dumps(
        instance: Instance, worker: Worker) -> None:
    """A turn of the loop that drains a large table can outlast a client's --timeout
    (CI: 'said nothing for 1 s' with 200 000 peers, for a client waiting for the next
    dump): whether a dump is written or none is yet, waiters hear a line every
    PROGRESS_EVERY_S without the loop."""
    table = table_of(("10.77.0.1", 1), ("10.77.0.2", 1), ("fd77::3", 1))
    writer = PausingWriter(instance)
    dumps = DumpService(writer, worker, table, Drains())
    current, later = Waiter(), Waiter()
    dumps.ask(current)
    dumps.service(0.0)
    writer.wait_paused()
    dumps.ask(later)
    time.sleep(4 * PROGRESS_EVERY_S)  # the loop is busy: service() is not called
    assert len(current.heard) >= 3 and len(later.heard) >= 3
    assert {h for h in later.heard} <= {("progress", (0, 3)), ("progress", (3, 3))}
    writer.go.release()
    finish(worker)
    assert current.heard[-1][0] == "written" and not later.answers
    heard = len(later.heard)
    time.sleep(4 * PROGRESS_EVERY_S)  # between dumps: the next one's drain is slow
    assert later.heard[heard:] and set(later.heard[heard:]) == {("progress", (0, 0))}
    dumps.service(0.0)
    writer.go.release()
    finish(worker)
    assert later.heard[-1][0] == "written"
    time.sleep(2 * PROGRESS_EVERY_S)
    assert dumps._keeping_alive is None  # nobody waits: the thread is gone


class SlowStartWriter(DumpWriter):
    """A DumpWriter that takes its time before the first piece (as the key-order sort of
    a large snapshot does on the worker), until `go` is set."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(instance, DumpContext(instance.name, "veth0", "xdp"))
        self.started = threading.Event()
        self.go = threading.Event()
        RELEASES.append(self.go.set)

    def write(self, table: PeerTable | TableSnapshot, now: float, progress: Progress) -> Path:
        self.started.set()
        self.go.wait()
        return super().write(table, now, progress)


def test_waiters_hear_progress_before_the_writer_has_written_anything(
        instance: Instance, worker: Worker) -> None:
    """A client's `--timeout` is the longest silence it accepts: a long sort before the
    first piece must not look like a hung daemon (CI: 'said nothing for 1 s')."""
    table = table_of(("10.77.0.1", 1), ("10.77.0.2", 1), ("fd77::3", 1))
    writer = SlowStartWriter(instance)
    dumps = DumpService(writer, worker, table, Drains())
    asked = Waiter()
    dumps.ask(asked)
    dumps.service(0.0)
    assert writer.started.wait(60)
    deadline = dumps.next_deadline()
    assert deadline is not None
    dumps.service(deadline + PROGRESS_EVERY_S)
    assert asked.heard == [("progress", (0, 3))]
    writer.go.set()
    finish(worker)
    assert [h[0] for h in asked.heard][-1] == "written"


def test_a_failed_dump_answers_its_waiters_in_one_line_and_is_retried_after_a_back_off(
        instance: Instance, worker: Worker, tmp_path: Path) -> None:
    table = table_of(("10.77.0.1", 2))
    writer = DumpWriter(instance, DumpContext("t", "veth0", "xdp"))
    dumps = DumpService(writer, worker, table, Drains())
    asked = Waiter()
    instance.statedir.rename(tmp_path / "moved")
    dumps.ask(asked)
    dumps.service(0.0)
    finish(worker)
    ((kind, error),) = asked.heard
    assert kind == "failed" and "\n" not in error
    assert error == (f"could not write {instance.json_path}: No such file or directory "
                     "(still counting; the dump is retried)")
    retry = writer.retry_at()
    assert writer.failures == 1 and retry is not None and dumps.next_deadline() == retry

    (tmp_path / "moved").rename(instance.statedir)
    dumps.service(retry - 0.001)
    assert not dumps.writing  # not before its time
    dumps.service(retry)
    assert dumps.writing  # the retry, owed to nobody in particular
    finish(worker)
    assert writer.failures == 0 and peers_in(instance) == {"10.77.0.1": 2}


def test_requests_are_counted_by_who_asked_and_how_they_ended(
        instance: Instance, worker: Worker, tmp_path: Path) -> None:
    """What the metrics show (ncebpf_dump_requests_total, ncebpf_dumps_written_total)."""
    dumps = DumpService(DumpWriter(instance, DumpContext("t", "veth0", "xdp")), worker,
                        table_of(("10.77.0.1", 2)), Drains())
    dumps.ask(Waiter())
    dumps.ask(Waiter())
    dumps.ask()  # USR1
    dumps.service(0.0)
    finish(worker)
    instance.statedir.rename(tmp_path / "moved")
    dumps.ask(Waiter())
    dumps.service(0.0)
    finish(worker)
    assert dumps.written == 1
    assert dumps.requests == {("control", "written"): 2, ("signal", "written"): 1,
                              ("control", "failed"): 1}


def test_hup_resets_only_once_its_dump_is_written_and_drains_wait_till_then(
        instance: Instance, worker: Worker) -> None:
    table = table_of(("10.77.0.1", 4))
    writer = PausingWriter(instance)
    checkpoints: list[int] = []
    dumps = DumpService(writer, worker, table, Drains(),
                        after=lambda: checkpoints.append(len(table.peers)))
    dumps.ask(reset=True)
    dumps.service(0.0)
    writer.wait_paused()
    assert dumps.holding_drains and len(table.peers) == 1  # not reset while being written
    writer.go.release()
    finish(worker)
    assert not dumps.holding_drains and len(table.peers) == 0
    assert table.start == int(dumps.last_written)  # the new period starts at the snapshot
    assert table.totals == Totals()
    assert peers_in(instance) == {"10.77.0.1": 4}
    assert checkpoints == [0]  # the checkpoint after the dump has the reset table


def test_hup_whose_dump_fails_resets_nothing(instance: Instance, worker: Worker,
                                             tmp_path: Path) -> None:
    table = table_of(("10.77.0.1", 4))
    dumps = DumpService(DumpWriter(instance, DumpContext("t", "veth0", "xdp")), worker,
                        table, Drains())
    instance.statedir.rename(tmp_path / "moved")
    dumps.ask(reset=True)
    dumps.service(0.0)
    finish(worker)
    assert not dumps.holding_drains and len(table.peers) == 1 and table.start == 1000


def test_settle_waits_for_the_write_in_flight_and_answers_it(instance: Instance,
                                                             worker: Worker) -> None:
    """A stop: the final dump comes only after the write in flight, whose waiters are
    answered; requests not started yet are left for the final dump."""
    table = table_of(("10.77.0.1", 1))
    writer = PausingWriter(instance)
    dumps = DumpService(writer, worker, table, Drains())
    flying, waiting = Waiter(), Waiter()
    dumps.ask(flying)
    dumps.service(0.0)
    writer.wait_paused()
    dumps.ask(waiting)
    ticks: list[None] = []

    def tick() -> None:  # settle's wait timed out once: only now may the write go on
        ticks.append(None)
        writer.go.release()

    dumps.settle(tick)
    assert len(ticks) == 1 and not worker.busy
    assert [h[0] for h in flying.heard][-1] == "written"
    assert {h[0] for h in flying.heard[:-1]} == {"progress"}
    assert dumps.take_waiting() == [waiting] and waiting.answers == []
    assert dumps.take_waiting() == [] and not dumps.writing


def test_a_control_client_is_told_the_path_of_its_format(instance: Instance) -> None:
    daemon_end, client_end = socket.socketpair()
    with client_end:
        waiter = ControlWaiter(DumpClient(daemon_end, "perl"), instance)
        waiter.progress(5, 9)
        waiter.written(WrittenDump(Path("/var/tmp"), 1.0))
        assert client_end.recv(4096).decode() == "progress 5 9\nok /var/tmp/t.stats\n"


def saved_generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The checkpoints that reach the disk, by the generation they hold (totals.packets)."""
    saved: list[int] = []
    real = checkpoint.save_arrays

    def counting(path: Path, arrays: dict[str, Any], mode: int = 0o600) -> float:
        saved.append(json.loads(arrays["header"].tobytes())["source_totals"]["packets"])
        return real(path, arrays, mode)
    monkeypatch.setattr(checkpoint, "save_arrays", counting)
    return saved


def checkpointer(worker: Worker, table: PeerTable, path: Path) -> Checkpointer:
    return Checkpointer(worker, table, path,
                        lambda at: checkpoint.CheckpointInfo(at, "d", "digest", "tc"), 0o600,
                        60.0)


def hold(worker: Worker) -> threading.Event:
    """Keep the worker busy (a long dump) until the event is set."""
    released = threading.Event()
    RELEASES.append(released.set)
    worker.submit(released.wait, lambda outcome: None)
    return released


def test_checkpoints_never_overlap_and_none_is_older_than_the_one_before(
        tmp_path: Path, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = saved_generations(monkeypatch)
    table = table_of(("10.77.0.1", 1))
    path = tmp_path / "t.checkpoint"
    checkpoints = checkpointer(worker, table, path)
    released = hold(worker)
    for generation in (1, 2, 3):
        table.totals = Totals(packets=generation)
        table.add(peer_key(f"10.77.1.{generation}"), generation, 60, 1002, 1002)
        checkpoints.save()  # the first is copied now; the others wait for it, as one
    released.set()
    while worker.busy:
        finish(worker)
    assert saved == [1, 3]
    loaded = checkpoint.load(path)
    assert loaded is not None
    restored, info = loaded
    assert restored.totals.packets == 3 and len(restored.peers) == 4
    assert (info.dataset, info.digest, info.mode) == ("d", "digest", "tc")


def test_an_eviction_checkpoint_is_on_disk_at_once_and_an_older_copy_never_replaces_it(
        tmp_path: Path, worker: Worker) -> None:
    table = table_of(("10.77.0.1", 1))
    path = tmp_path / "t.checkpoint"
    checkpoints = checkpointer(worker, table, path)
    released = hold(worker)
    table.totals = Totals(packets=1)
    checkpoints.save()  # copied now, written after the hold
    table.totals = Totals(packets=2)
    checkpoints.save_before_evict()  # the drain deletes kernel entries once this returns
    loaded = checkpoint.load(path)
    assert loaded is not None and loaded[0].totals.packets == 2
    released.set()
    while worker.busy:
        finish(worker)
    loaded = checkpoint.load(path)
    assert loaded is not None and loaded[0].totals.packets == 2


def test_a_checkpoint_that_cannot_be_written_is_logged_and_the_next_one_is(
        tmp_path: Path, worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    table = table_of(("10.77.0.1", 1))
    path = tmp_path / "gone" / "t.checkpoint"
    checkpoints = checkpointer(worker, table, path)
    checkpoints.save()
    finish(worker)
    assert "could not write the checkpoint" in caplog.text
    path.parent.mkdir()
    checkpoints.save()
    finish(worker)
    assert checkpoint.load(path) is not None


def test_the_final_checkpoint_is_the_last_and_closes_the_checkpointer(
        tmp_path: Path, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = saved_generations(monkeypatch)
    table = table_of(("10.77.0.1", 1))
    checkpoints = checkpointer(worker, table, tmp_path / "t.checkpoint")
    table.totals = Totals(packets=7)
    checkpoints.save_now()
    checkpoints.save()  # a dump answered after the stop began: the final one came already
    assert saved == [7] and not worker.busy


def test_the_worker_runs_jobs_in_order_and_hands_outcomes_to_the_loop(worker: Worker) -> None:
    outcomes: list[Outcome] = []
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def done(outcome: Outcome) -> None:
        threads.append(threading.get_ident())
        outcomes.append(outcome)

    ran: list[int] = []
    for n in range(5):
        worker.submit(lambda n=n: ran.append(n) or n, done)  # type: ignore[misc]
    failure = OSError(28, "No space left on device")

    def failing() -> None:
        raise failure
    worker.submit(failing, done)
    assert worker.busy
    finish(worker)
    assert ran == [0, 1, 2, 3, 4]
    assert [o.value for o in outcomes[:5]] == [0, 1, 2, 3, 4]
    assert outcomes[5].error is failure
    assert threads == [loop_thread] * 6 and not worker.busy


def test_a_callback_that_raises_reaches_the_loop(worker: Worker) -> None:
    def broken(outcome: Outcome) -> None:
        raise RuntimeError("a bug")
    worker.submit(lambda: None, broken)
    with pytest.raises(RuntimeError, match="a bug"):
        finish(worker)


def test_leaving_the_worker_finishes_what_it_was_given(tmp_path: Path) -> None:
    target = tmp_path / "after"
    with Worker() as worker:
        released = hold(worker)
        worker.submit(lambda: target.write_text("x"), lambda outcome: None)
        assert not target.exists()
        released.set()
    assert target.read_text() == "x"


def test_a_snapshot_copy_is_independent_of_the_table() -> None:
    """What the worker writes is the loop's copy: later changes do not reach it."""
    table = table_of(("10.77.0.1", 1))
    arrays = checkpoint.copied_arrays(table, checkpoint.CheckpointInfo(1.0, "", "", "tc"))
    table.add(peer_key("10.77.0.1"), 9, 900, 1002, 1002)
    assert int(np.asarray(arrays["counts"])[:, 0].sum()) == 1


def test_a_finished_job_lets_go_of_its_copies(worker: Worker) -> None:
    """A dump's snapshot is 100 MB at 1 M peers: it goes with its job, not with the next."""
    class Copy:
        pass
    copy = Copy()
    gone = weakref.ref(copy)
    worker.submit(lambda copy=copy: None, lambda outcome: None)  # type: ignore[misc]
    del copy
    finish(worker)
    assert gone() is None
