"""The log writer: records reach the file from a queue, promptly, and none is lost at exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import log_containing

CHILD = textwrap.dedent(
    """
    import logging, sys, time
    from pathlib import Path
    from spcs.common import logs

    logs.setup("INFO", Path(sys.argv[1]))
    log = logging.getLogger("spcs.test")
    log.info("first line")
    # the writer drains its queue on its own, while the process runs
    deadline = time.monotonic() + 5
    while "first line" not in Path(sys.argv[1]).read_text():
        assert time.monotonic() < deadline, "the first line was not written within 5 s"
        time.sleep(0.01)
    for n in range(int(sys.argv[2])):
        log.info("line %d", n)
    # exit at once: what is still queued is written at exit
    """
)


def test_every_record_is_written_even_when_the_process_exits_at_once(tmp_path: Path):
    log_file = tmp_path / "service.log"
    count = 20000
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(log_file), str(count)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = log_file.read_text().splitlines()
    assert len(lines) == count + 1
    assert lines[-1].endswith(f"INFO spcs.test [-] line {count - 1}")
    assert [line.rsplit(" ", 1)[1] for line in lines[1:]] == [str(n) for n in range(count)]


SHUTDOWN_CHILD = textwrap.dedent(
    """
    import logging, shutil, sys
    from pathlib import Path
    from spcs.common import logs

    folder = Path(sys.argv[1])
    logs.setup("INFO", folder / "service.log")
    for n in range(1000):
        logging.getLogger("spcs.test").info("line %d", n)
    logs.shutdown()  # what the demo does before removing its temporary directory
    shutil.copy(folder / "service.log", folder.parent / "copy.log")
    shutil.rmtree(folder)
    logging.getLogger("spcs.test").info("after shutdown: not written anywhere")
    """
)


def test_shutdown_writes_the_queue_and_lets_the_directory_go(tmp_path: Path):
    folder = tmp_path / "logs"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_CHILD, str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = (tmp_path / "copy.log").read_text().splitlines()
    assert len(lines) == 1000 and lines[-1].endswith("line 999")
    assert not folder.exists()


def test_log_containing_waits_for_the_text(tmp_path: Path):
    path = tmp_path / "later.log"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; time.sleep(0.3); open({str(path)!r}, 'w').write('ok')",
        ]
    )
    try:
        assert log_containing(path, "ok", timeout=10) == "ok"
    finally:
        writer.wait()
    assert log_containing(path, "missing", timeout=0.1) == "ok"


JSON_CHILD = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from spcs.common import logs

    logs.setup("INFO", Path(sys.argv[1]), sys.argv[2])
    logs.add_secret("tok-0123456789abcdef")
    logs.add_secret("short")  # too short to be replaced anywhere
    log = logging.getLogger("spcs.test")
    log.info("plain ünïcode\\nsecond line")
    log.info("url http://tok-0123456789abcdef@host/ in a message, short stays")
    log.info("rpc line", extra={logs.FIELDS: {"method": "/x.Y/Z", "ms": 1.5, "level": "no"}})
    try:
        raise ValueError("failed with tok-0123456789abcdef")
    except ValueError:
        log.exception("it broke")
    """
)


def _child_log(tmp_path: Path, log_format: str) -> str:
    log_file = tmp_path / f"{log_format}.log"
    done = subprocess.run(
        [sys.executable, "-c", JSON_CHILD, str(log_file), log_format],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return log_file.read_text()


def test_json_lines_are_objects_with_fields_and_no_secret(tmp_path: Path):
    text = _child_log(tmp_path, "json")
    assert "tok-0123456789abcdef" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 4  # a message's newline stays inside its object
    first, secret, rpc, error = lines
    assert first["message"] == "plain ünïcode\nsecond line"
    assert first["level"] == "INFO" and first["logger"] == "spcs.test"
    assert first["request_id"] == "-" and re.fullmatch(TIME, first["time"])
    assert secret["message"] == "url http://<redacted>@host/ in a message, short stays"
    assert rpc["method"] == "/x.Y/Z" and rpc["ms"] == 1.5
    assert rpc["level"] == "INFO"  # a field never overrides the record's own
    assert error["level"] == "ERROR" and error["message"] == "it broke"
    assert "ValueError: failed with <redacted>" in error["exception"]


def test_text_lines_have_secrets_replaced_too(tmp_path: Path):
    text = _child_log(tmp_path, "text")
    assert "tok-0123456789abcdef" not in text
    assert "INFO spcs.test [-] url http://<redacted>@host/ in a message, short stays" in text
    assert "ValueError: failed with <redacted>" in text
    assert not text.startswith("{")


TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
