"""The package's logging: one configuration point, plain or JSON lines, a level."""

from __future__ import annotations

import io
import json
import logging

from pipelines import logs


def test_plain_lines_json_lines_and_level():
    buf = io.StringIO()
    try:
        logs.setup("INFO", stream=buf)
        logs.get("ingest").info("[ingest] batch 1: read 10")
        logs.get("ingest").debug("not shown at INFO")
        assert buf.getvalue() == "[ingest] batch 1: read 10\n"

        buf = io.StringIO()
        logs.setup("WARNING", json_lines=True, stream=buf)
        logs.get("gold").info("below the level")
        logs.get("backfill").warning("the silver commit lost a race")
        records = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert len(records) == 1
        r = records[0]
        assert (r["level"], r["logger"], r["message"]) == ("WARNING", "pipelines.backfill",
                                                             "the silver commit lost a race")
        assert r["time"]
        # One handler, whatever the number of setups.
        # (other tests may attach pytest's capture handlers too: only ours are counted)
        assert [h.get_name() for h in logging.getLogger(logs.ROOT).handlers].count(logs._HANDLER_NAME) == 1
    finally:
        logs.setup()


def test_ensure_leaves_a_configured_logger_alone():
    buf = io.StringIO()
    try:
        logs.setup("ERROR", stream=buf)
        logs.ensure()
        logs.get("ingest").warning("dropped: below ERROR")
        assert buf.getvalue() == ""
    finally:
        logs.setup()
