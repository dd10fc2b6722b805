"""The journal shared by shards: a reader waits for a line being written instead of truncating it."""

import json
import threading
import time

from kneuron.runs.store import FactLog, locked


def test_a_reader_waits_for_a_line_being_written_and_keeps_it(tmp_path):
    path = tmp_path / "journal.jsonl"
    FactLog(path, key="key").append({"key": "0:a", "x": 1})
    started, loaded = threading.Event(), {}

    def reader():
        started.set()
        loaded["log"] = FactLog(path, key="key")

    with locked(path):  # a writer in another process, halfway through its line
        with path.open("a", encoding="utf-8") as fh:
            fh.write('{"key":"1:a",')
            fh.flush()
            thread = threading.Thread(target=reader)
            thread.start()
            started.wait()
            time.sleep(0.3)
            assert "log" not in loaded  # it waits for the writer
            fh.write('"x":2}\n')
    thread.join(10)
    assert set(loaded["log"].records) == {"0:a", "1:a"}
    assert path.read_text().count("\n") == 2


def test_a_line_cut_short_by_a_crash_is_still_dropped(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps({"key": "0:a"}) + "\n" + '{"key": "1:')
    log = FactLog(path, key="key")
    assert set(log.records) == {"0:a"}
    log.append({"key": "1:a"})
    assert set(FactLog(path, key="key").records) == {"0:a", "1:a"}
