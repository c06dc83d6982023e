import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from diffbox.store import (CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobHistory, atomic_write_text, open_db)

WRITER = textwrap.dedent("""
    import sys
    from diffbox.store import JobHistory, DONE
    history = JobHistory(sys.argv[1])
    print("ready", flush=True)
    while True:
        job = history.create("i2v", {"prompt": "a long prompt " * 60, "seed": 1})
        history.update(job, status=DONE, outputs=["video.mp4"])
""")


def test_kill_9_at_any_moment_leaves_the_last_good_database(tmp_path):
    db = tmp_path / "jobs.json"
    rng = random.Random(7)
    last_count = 0
    for _ in range(15):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.35))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        # The file itself must parse: no quarantine, no half-written JSON.
        data = json.loads(db.read_text())
        jobs = list(data["jobs"].values())
        assert len(jobs) >= last_count
        assert all(job["status"] in (QUEUED, DONE) and job["params"]["seed"] == 1 for job in jobs)
        last_count = len(jobs)
    assert last_count > 50  # the writers really wrote, many times over
    assert db.stat().st_size > 64 * 1024  # big enough that one write takes several syscalls
    assert not list(tmp_path.glob("*.corrupt-*"))
    history = JobHistory(db)  # reopening also sweeps temp files a killed writer left behind
    assert len(history.list(limit=10_000)) == last_count
    assert not list(tmp_path.glob(".tmp-*"))


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
def test_a_corrupt_database_is_moved_aside_and_a_new_one_starts(tmp_path, garbage, caplog):
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
