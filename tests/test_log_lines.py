"""A logged value cannot forge a log line, in the backend's log or the CLI's."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request

from mlcdseg.log_lines import SingleLineFormatter, escape_control_characters
from tests.backend_doubles import EXPRESSIONS_CONFIG
from tests.test_backend_limits import served_backend  # noqa: F401 (fixture)
from tests.test_backend_serve import REPO_ROOT

FORGED = "2026-11-30 12:00:00 INFO admin logged in"


def record(message: str, *args: object, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("mlcdseg.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_control_characters_are_escaped_visibly():
    assert escape_control_characters("a\r\nb\x00c\td\x1b[31me\x85f\u2028g") == (
        "a\\r\\nb\\x00c\\td\\x1b[31me\\x85f\\u2028g"
    )
    assert escape_control_characters("the man in the red shirt, ü, 中") == "the man in the red shirt, ü, 中"


def test_a_forged_line_in_a_logged_url_stays_on_the_record_line():
    formatter = SingleLineFormatter("%(levelname)s %(name)s: %(message)s")
    text = formatter.format(record("image %s: HTTP 404", "http://ls/a.png\r\n" + FORGED))
    assert text == "WARNING mlcdseg.test: image http://ls/a.png\\r\\n" + FORGED + ": HTTP 404"


def test_a_traceback_is_indented_so_no_line_of_it_passes_for_a_record():
    formatter = SingleLineFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("bad url\n" + FORGED)
    except ValueError:
        text = formatter.format(record("unexpected error", exc_info=sys.exc_info()))
    first, *rest = text.split("\n")
    assert first == "WARNING mlcdseg.test: unexpected error"
    assert rest and all(line.startswith("    ") for line in rest)
    assert not any(line.startswith(FORGED) for line in text.split("\n"))


def test_the_cli_logs_one_line_per_record():
    program = (
        "import logging, sys\n"
        "from mlcdseg import cli\n"
        "cli.COMMANDS = [*cli.COMMANDS]\n"
        "def register(subparsers):\n"
        "    parser = subparsers.add_parser('say')\n"
        "    parser.set_defaults(handler=lambda arguments: logging.getLogger('mlcdseg.x').warning(\n"
        "        'fetching %s', 'http://ls/a.png\\r\\n' + sys.argv[1]) or 0)\n"
        "cli.COMMANDS.append(register)\n"
        "sys.exit(cli.main(['say']))\n"
    )
    done = subprocess.run([sys.executable, "-c", program, FORGED], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"WARNING mlcdseg.x: fetching http://ls/a.png\\r\\n{FORGED}"]


def test_the_backend_log_cannot_be_forged_through_a_task_url(served_backend):  # noqa: F811
    url = served_backend.url + "/missing.png\r\n" + FORGED
    body = {"tasks": [{"id": 1, "data": {"image": url, "expression": "red"}}], "label_config": EXPRESSIONS_CONFIG}
    request = urllib.request.Request(
        served_backend.url + "/predict", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["results"] == [[]]  # the task failed, was logged
    log = served_backend.log_path.read_text()
    assert "\\r\\n" + FORGED in log
    assert not any(line.startswith(FORGED) for line in log.splitlines())
