"""Append-only results files: concurrent appends, half-written tails, write failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest

from spokentod.rundir.layout import parse_results_name, results_name
from spokentod.rundir.records import ResultRecord
from spokentod.rundir.store import ResultFile, StoreError, final_records, read_records


def _rec(d: str, t: int, **kw) -> ResultRecord:
    return ResultRecord(**{"system": "s", "dialogue_id": d, "turn": t, "seed": 0, "attempt": 1, "text": f"r{t}",
                           "error": None, **kw})


def test_concurrent_appends_never_interleave(tmp_path):
    f = ResultFile(tmp_path / "results" / "s.jsonl")

    def work(k: int) -> None:
        for t in range(200):
            f.append(_rec(f"d{k}", t, text="x" * (t * 37 % 900)))  # lines of varied length

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    f.close()
    recs, dropped = read_records(f.path)
    assert dropped == 0 and len(recs) == 1600
    assert len(final_records(recs)) == 1600


def test_half_written_tail_is_dropped_and_file_repaired(tmp_path):
    f = ResultFile(tmp_path / "s.jsonl")
    for t in range(3):
        f.append(_rec("d", t))
    f.close()
    with f.path.open("ab") as fh:
        fh.write(b'{"system": "s", "dialogue_id": "d", "tu')  # a write cut short by kill -9
    assert len(read_records(f.path)[0]) == 3  # read-only view: not repaired
    g = ResultFile(f.path)
    recs, dropped = g.load()
    assert [r["turn"] for r in recs] == [0, 1, 2] and dropped == 39
    g.append(_rec("d", 3))
    g.close()
    assert [json.loads(x)["turn"] for x in f.path.read_text().splitlines()] == [0, 1, 2, 3]


def test_torn_tail_of_nul_bytes_is_dropped(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(json.dumps(_rec("d", 0).to_json()).encode() + b"\n" + b"\x00" * 300)  # power cut: size grew, data lost
    recs, dropped = ResultFile(path).load()
    assert len(recs) == 1 and dropped == 300
    assert path.read_bytes().endswith(b"}\n")


def test_damage_before_the_last_line_is_an_error(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(_rec("d", 0).to_json()) + "\n{broken\n" + json.dumps(_rec("d", 1).to_json()) + "\n")
    with pytest.raises(StoreError, match="line 2 is damaged"):
        ResultFile(path).load()


def test_last_record_of_a_key_wins():
    recs = [r.to_json() for r in (_rec("d", 0, error="boom"), _rec("d", 1), _rec("d", 0, attempt=2, text="ok"))]
    finals = final_records(recs)
    assert finals[("s", "d", 0, 0)]["text"] == "ok" and len(finals) == 2


def test_file_names_round_trip():
    assert results_name("text") == "text.jsonl"
    assert results_name("text", (2, 4)) == "text.shard-2-of-4.jsonl"
    assert parse_results_name("text.shard-2-of-4.jsonl") == ("text", (2, 4))
    assert parse_results_name("my-sys.jsonl") == ("my-sys", (1, 1))
    assert parse_results_name("notes.txt") is None


def test_full_disk_leaves_no_half_record(tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes write() fail part-way like a full
    disk does. The record that did not fit is cut back out; the error names the file."""
    path = tmp_path / "s.jsonl"
    code = textwrap.dedent(f"""
        import resource, signal
        from spokentod.rundir.records import ResultRecord
        from spokentod.rundir.store import ResultFile, StoreWriteError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))
        f = ResultFile({str(path)!r})
        n = 0
        try:
            while True:
                f.append(ResultRecord(system="s", dialogue_id="d", turn=n, seed=0, text="x" * 700))
                n += 1
        except StoreWriteError as e:
            print(n, e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    n = int(out.stdout.split()[0])
    assert "cannot write results to" in out.stdout and "File too large" in out.stdout
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data) < 5000
    recs, dropped = read_records(path)
    assert dropped == 0 and [r["turn"] for r in recs] == list(range(n))
