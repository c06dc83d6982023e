import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from diffbox.store import (CANCELLED, DONE, FAILED, QUEUED, RUNNING, HistoryUnavailable, JobHistory, atomic_write_text,
                           open_db)

WRITER = textwrap.dedent("""
    import sys
    from diffbox.store import JobHistory, DONE
    history = JobHistory(sys.argv[1])
    print("ready", flush=True)
    while True:
        job = history.create("i2v", {"prompt": "a long prompt " * 60, "seed": 1})
        history.update(job, status=DONE, outputs=["video.mp4"])
        print("acknowledged", job, flush=True)
""")


def rows(db) -> list[dict]:
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return [json.loads(text) for (text,) in connection.execute("SELECT record FROM jobs")]


def test_kill_9_at_any_moment_loses_nothing_acknowledged(tmp_path):
    db = tmp_path / "jobs.sqlite3"
    rng = random.Random(7)
    acknowledged: set[str] = set()
    for _ in range(12):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        acknowledged.add(writer.stdout.readline().split()[1])  # it is writing: now kill it at a random moment
        time.sleep(rng.uniform(0.0, 0.3))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        acknowledged |= {line.split()[1] for line in writer.stdout.read().splitlines() if line.startswith("ack")}
        jobs = {job["id"]: job for job in rows(db)}  # a hot journal from the kill is rolled back here
        finished = {job_id for job_id, job in jobs.items() if job["status"] == DONE}
        assert acknowledged <= finished
        assert all(job["status"] in (QUEUED, DONE) and job["params"]["seed"] == 1 for job in jobs.values())
    assert len(acknowledged) > 24  # the writers really wrote, many times over
    history = JobHistory(db)
    assert {job["id"] for job in history.list(limit=10_000)} >= acknowledged
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_a_crash_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    atomic_write_text(target, '{"old": true}')

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, '{"new": true}')
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


@pytest.mark.parametrize("garbage", [b'{"jobs": {"1": {"id": ', b"\x00\xff\xfe", b"[1, 2, 3]", b'{"jobs": 5}'])
def test_a_corrupt_old_json_history_is_moved_aside_and_a_new_one_starts(tmp_path, garbage, caplog):
    db = tmp_path / "jobs.json"
    db.write_bytes(garbage)
    history = JobHistory(db)
    assert history.list() == []
    job = history.create("i2v", {})
    assert history.get(job)["status"] == QUEUED
    aside = list(tmp_path.glob("jobs.corrupt-*.json"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage  # the user's file is kept, not deleted
    assert "moved it aside" in caplog.text


def test_job_lifecycle_and_listing(tmp_path):
    history = JobHistory(tmp_path / "jobs.json")
    first = history.create("i2v", {"seed": 1})
    time.sleep(0.01)
    second = history.create("svi", {"seed": 2})
    history.update(first, status=RUNNING, started_at=time.time())
    history.update(first, status=DONE, outputs=["a.mp4"])
    assert [j["id"] for j in history.list()] == [second, first]  # newest first
    assert [j["id"] for j in history.list(workflow="i2v")] == [first]
    assert history.get(first)["outputs"] == ["a.mp4"]
    with pytest.raises(KeyError):
        history.update("nope", status=DONE)


def test_jobs_cut_off_by_a_restart_are_marked_failed(tmp_path):
    history = JobHistory(tmp_path / "jobs.json")
    running = history.create("i2v", {})
    history.update(running, status=RUNNING)
    queued = history.create("i2v", {})
    done = history.create("i2v", {})
    history.update(done, status=CANCELLED)
    history.close()
    reopened = JobHistory(tmp_path / "jobs.json")
    assert reopened.mark_interrupted() == 2
    assert reopened.get(running)["status"] == FAILED and "interrupted" in reopened.get(running)["error"]
    assert reopened.get(queued)["status"] == FAILED
    assert reopened.get(done)["status"] == CANCELLED


def test_open_db_is_plain_tinydb_for_other_tables(tmp_path):
    db = open_db(tmp_path / "presets.json")
    db.table("presets").insert({"name": "fast"})
    assert json.loads((tmp_path / "presets.json").read_text())["presets"]["1"] == {"name": "fast"}


def test_a_corrupt_job_database_is_moved_aside_and_a_new_one_starts(tmp_path, caplog):
    db = tmp_path / "jobs.sqlite3"
    garbage = b"SQLite format 3\x00" + bytes(range(256)) * 64
    db.write_bytes(garbage)
    history = JobHistory(db)
    assert history.list() == [] and history.get(history.create("i2v", {}))["status"] == QUEUED
    aside = list(tmp_path.glob("jobs.corrupt-*.sqlite3"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert "moved it aside" in caplog.text


def test_the_old_json_history_is_imported_once_and_kept_beside(tmp_path):
    old = tmp_path / "jobs.json"
    records = {str(n): {"id": f"20250101-00000{n}-abcdef", "workflow": "i2v", "status": DONE, "params": {"seed": n},
                        "created_at": 1000.0 + n, "outputs": [f"{n}.mp4"]} for n in range(3)}
    old.write_text(json.dumps({"jobs": records}))
    history = JobHistory(old)
    assert [j["params"]["seed"] for j in history.list()] == [2, 1, 0]
    history.close()
    assert not old.exists() and (tmp_path / "jobs.json.imported").is_file()
    assert len(JobHistory(old).list()) == 3  # not imported twice


def test_a_refused_write_is_kept_shown_and_saved_when_the_disk_recovers(tmp_path, monkeypatch):
    history = JobHistory(tmp_path / "jobs.sqlite3", retry_s=0.05)
    job = history.create("i2v", {"seed": 1})
    history.update(job, status=RUNNING, started_at=time.time())
    disk_full = {"on": True}
    real_write = JobHistory._write

    def write(self, records):
        if disk_full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "jobs.sqlite3"))
        real_write(self, records)

    monkeypatch.setattr(JobHistory, "_write", write)
    assert history.update(job, status=DONE, outputs=["video.mp4"]) is False
    assert history.get(job)["status"] == DONE and history.list()[0]["status"] == DONE  # shown as it is
    assert rows(tmp_path / "jobs.sqlite3")[0]["status"] == RUNNING  # not on disk yet
    with pytest.raises(HistoryUnavailable, match="the job could not be recorded in the history: the disk is full"):
        history.create("i2v", {})
    disk_full["on"] = False
    deadline = time.monotonic() + 10
    while rows(tmp_path / "jobs.sqlite3")[0]["status"] != DONE:  # the retry thread saves it on its own
        assert time.monotonic() < deadline, "the kept record was never saved"
        time.sleep(0.05)
    assert history.flush() == 0


FULL_DISK_CHILD = textwrap.dedent("""
    import json, resource, signal, sys, time
    from diffbox.store import JobHistory
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    history = JobHistory(sys.argv[1], retry_s=0.1)
    job = history.create("i2v", {"seed": 1})
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096 * 8, hard))  # the database cannot grow past 32 KB
    saved = history.update(job, status="done", outputs=["video.mp4"], notes=["x" * 100_000])
    print(json.dumps({"saved": saved, "shown": history.get(job)["status"]}), flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
    deadline = time.monotonic() + 10
    while history.flush() and time.monotonic() < deadline:
        time.sleep(0.1)
    print(json.dumps({"unsaved": history.flush()}), flush=True)
""")


def test_a_real_file_size_limit_keeps_the_finished_state_until_it_can_be_saved(tmp_path):
    db = tmp_path / "jobs.sqlite3"
    result = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(db)], capture_output=True, text=True,
                            timeout=60)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [{"saved": False, "shown": DONE}, {"unsaved": 0}], result.stderr
    assert "the history could not save its done state" in result.stderr
    assert rows(db)[0]["status"] == DONE and len(rows(db)[0]["notes"][0]) == 100_000
