"""The queue on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from geotrain.errors import JobNotFound
from geotrain.jobs.db import make_engine, make_sessionmaker, migrate
from geotrain.jobs.queue import Queue
from geotrain.jobs.tables import Base, JobStatus


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'q.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def queue(db_url: str) -> Iterator[Queue]:
    migrate(db_url)
    engine = make_engine(db_url)
    yield Queue(make_sessionmaker(engine))
    engine.dispose()


def test_migrations_produce_the_schema_of_the_models(db_url: str) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_jobs_are_claimed_oldest_first_and_once(queue: Queue) -> None:
    ids = [queue.submit("T", "u", {"n": i}, 3).id for i in range(3)]
    first = queue.claim("w1", 60)
    assert first is not None and first.id == ids[0] and first.status == JobStatus.EXECUTING and first.attempts == 1
    assert queue.claim("w2", 60).id == ids[1]  # type: ignore[union-attr]


def test_concurrent_workers_never_share_a_job(queue: Queue) -> None:
    ids = {queue.submit("T", "u", {}, 3).id for _ in range(40)}
    taken: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (job := queue.claim(name, 60)) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_messages_are_append_only_in_order(queue: Queue) -> None:
    job = queue.submit("T", "u", {}, 3)
    for i in range(20):
        queue.add_message(job.id, f"m{i}")
    texts = [m.description for m in queue.get(job.id).messages]
    assert texts == ["Submitted.", *[f"m{i}" for i in range(20)]]


def test_epochs_are_kept_as_numbers_in_order_an_epoch_run_again_replaces_its_row(queue: Queue) -> None:
    job = queue.submit("T", "alice", {}, 3)
    queue.add_epoch(job.id, 2, {"train_loss": 0.5, "valid_loss": float("nan"), "seconds": 3.0}, {"miou": 0.4})
    queue.add_epoch(job.id, 1, {"train_loss": 0.9, "valid_loss": 0.8}, {"miou": 0.2, "accuracy": float("inf")})
    queue.add_epoch(job.id, 2, {"train_loss": 0.45, "valid_loss": 0.6}, {"miou": 0.5})  # after a crash
    epochs = queue.epochs(job.id, "alice")
    assert [(e["epoch"], e["train_loss"], e["valid_loss"], e["metrics"]) for e in epochs] == [
        (1, 0.9, 0.8, {"miou": 0.2}), (2, 0.45, 0.6, {"miou": 0.5})
    ]  # fmt: skip
    assert epochs[0]["seconds"] is None
    with pytest.raises(JobNotFound):
        queue.epochs(job.id, "bob")


def test_an_expired_lease_puts_the_job_back_then_fails_it_after_the_last_attempt(queue: Queue) -> None:
    job = queue.submit("T", "u", {}, 2)
    assert queue.claim("dead-worker", 0.05) is not None
    time.sleep(0.1)
    assert queue.reap_expired() == [job.id]
    again = queue.get(job.id)
    assert again.status == JobStatus.SUBMITTED and again.attempts == 1
    second = queue.claim("w2", 0.05)
    assert second is not None and second.attempts == 2
    assert queue.heartbeat(job.id, "dead-worker", 60) == "lost"
    time.sleep(0.1)
    queue.reap_expired()
    final = queue.get(job.id)
    assert final.status == JobStatus.FAILED and "after 2 of 2 attempts" in final.messages[-1].description


def test_cancel_queued_running_and_finished_jobs(queue: Queue) -> None:
    queued = queue.submit("T", "u", {}, 3)
    assert queue.request_cancel(queued.id).status == JobStatus.CANCELLED
    running = queue.submit("T", "u", {}, 3)
    queue.claim("w", 60)
    assert queue.request_cancel(running.id).status == JobStatus.CANCELLING
    assert queue.heartbeat(running.id, "w", 60) == "cancel"
    assert queue.cancelled(running.id, "w")
    assert queue.request_cancel(running.id).status == JobStatus.CANCELLED
    done = queue.submit("T", "u", {}, 3)
    queue.claim("w", 60)
    queue.succeed(done.id, "w", {"out_item": {"uri": "x"}})
    assert queue.request_cancel(done.id).status == JobStatus.SUCCEEDED


def test_a_worker_that_lost_its_lease_cannot_finish_the_job(queue: Queue) -> None:
    job = queue.submit("T", "u", {}, 3)
    queue.claim("w1", 0.01)
    time.sleep(0.05)
    queue.reap_expired()
    queue.claim("w2", 60)
    assert not queue.succeed(job.id, "w1", {"out_item": {}})
    assert queue.get(job.id).status == JobStatus.EXECUTING


def test_another_owner_does_not_see_the_job(queue: Queue) -> None:
    job = queue.submit("T", "alice", {}, 3)
    with pytest.raises(JobNotFound):
        queue.get(job.id, owner="bob")
    with pytest.raises(JobNotFound):
        queue.request_cancel(job.id, owner="bob")


def test_a_job_for_gpu_workers_waits_for_one_and_others_go_to_anyone(queue: Queue) -> None:
    gpu_job = queue.submit("t", "u", {}, 3, requires="gpu")
    any_job = queue.submit("t", "u", {}, 3)
    cpu_only = frozenset({"cpu"})
    first = queue.claim("cpu-worker", 60, cpu_only)
    assert first is not None and first.id == any_job.id
    assert queue.claim("cpu-worker", 60, cpu_only) is None  # the GPU job stays queued
    taken = queue.claim("gpu-worker", 60, frozenset({"gpu", "cpu"}))
    assert taken is not None and taken.id == gpu_job.id


def test_workers_say_what_they_run_and_leave(queue: Queue) -> None:
    queue.worker_seen("w1", frozenset({"gpu", "cpu"}), 2)
    queue.worker_seen("w2", frozenset({"cpu"}), 0)
    queue.worker_seen("w1", frozenset({"gpu", "cpu"}), 2)  # seen again: one row
    assert queue.live_workers(60) == [("w1", ["cpu", "gpu"]), ("w2", ["cpu"])]
    queue.worker_gone("w2")
    assert [w for w, _ in queue.live_workers(60)] == ["w1"]


def test_retention_removes_old_finished_jobs_folders_but_not_packages(queue: Queue, tmp_path: Path) -> None:
    import datetime as dt

    from sqlalchemy import update

    from geotrain.config import Settings
    from geotrain.jobs.tables import Job
    from geotrain.worker.loop import Worker

    settings = Settings(home=tmp_path / "home", retention_days=1)
    settings.ensure_dirs()
    old, recent, running = (queue.submit("t", "u", {}, 3) for _ in range(3))
    for _ in range(2):
        claimed = queue.claim("w", 60)
        assert claimed is not None
        queue.succeed(claimed.id, "w", {"out_item": {}})
    queue.claim("w", 60)  # the third stays running
    with queue._sessions.begin() as session:
        session.execute(
            update(Job).where(Job.id == old.id).values(finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
        )
    for job in (old, recent, running):
        (settings.jobs_dir / job.id / "checkpoints").mkdir(parents=True)
    package = settings.stores["/fileShares/geotrain"] / "models" / "m" / "m.dlpk"
    package.parent.mkdir(parents=True)
    package.write_bytes(b"PK")
    assert Worker(settings, queue).clean_up() == [old.id]
    assert not (settings.jobs_dir / old.id).exists()
    assert (settings.jobs_dir / recent.id).is_dir() and (settings.jobs_dir / running.id).is_dir()
    assert package.is_file()
