"""Log formats and redaction: what an operator reads in the journal."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from ugcwatchd.logs import JournalFormatter, JsonFormatter, Redact, setup


def record(message: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("ugcwatchd.lifecycle", level, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"), (logging.ERROR, "<3>")],
)
def test_logs_journal_lines_carry_the_syslog_priority(level: int, prefix: str) -> None:
    assert (
        JournalFormatter().format(record("rule %s: planned %s", "dub", "clip", level=level))
        == f"{prefix}ugcwatchd.lifecycle: rule dub: planned clip"
    )


def test_logs_journal_prefixes_every_line_of_a_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = JournalFormatter().format(rec).splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_logs_json_is_one_object_a_line() -> None:
    document = json.loads(JsonFormatter().format(record("submitted %s", "a.facedub")))
    assert document["level"] == "info" and document["message"] == "submitted a.facedub"
    assert document["logger"] == "ugcwatchd.lifecycle" and document["time"].endswith("Z")


def test_logs_redaction_masks_keys_in_messages_args_and_tracebacks() -> None:
    redact = Redact(["fdb_super_secret_key"])
    rec = record("refused %s", "Bearer fdb_super_secret_key")
    assert redact.filter(rec) and rec.getMessage() == "refused Bearer ***"
    try:
        raise ValueError("key fdb_super_secret_key leaked")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    redact.filter(rec)
    assert "fdb_super_secret_key" not in (rec.exc_text or "") and "***" in (rec.exc_text or "")


def test_logs_setup_auto_is_text_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")  # not our stderr: text after all
    setup("info", "auto", ["dl_secret_abcdef"])
    logging.getLogger("ugcwatchd.test").info("key %s", "dl_secret_abcdef")
    err = capsys.readouterr().err
    assert "INFO ugcwatchd.test: key ***" in err and not err.startswith("<")
    assert logging.getLogger("httpx").level == logging.WARNING


@pytest.mark.parametrize(
    "secret",
    ["fdb_sandbox\n", "dl_schlüssel_key", "fdb_with'quote\"and\\slash", "fdb_plain_key "],
)
def test_logs_redaction_with_escaped_secret_masks_every_form(secret: str) -> None:
    redact = Redact([secret])
    raw = secret.encode()
    forms = {
        "plain": secret,
        "repr": repr(secret),
        "ascii": ascii(secret),
        "bytes": repr(raw),
        "header": repr(b"Bearer " + raw),  # how h11 refuses a header value
        "json": json.dumps(secret),
        "json_utf8": json.dumps(secret, ensure_ascii=False),
        "url": "https://x.example/?key=" + quote(secret, safe=""),
    }
    core = secret.strip()
    for name, form in forms.items():
        rec = record("refused: %s", form)
        redact.filter(rec)
        message = rec.getMessage()
        assert "***" in message, name
        assert core[:12] not in message and core[-6:] not in message, (name, message)


def test_logs_redaction_with_escaped_secret_in_a_traceback_masks_it() -> None:
    redact = Redact(["fdb_sandbox\n"])
    try:
        raise ValueError(f"Illegal header value {b'Bearer fdb_sandbox' + bytes([10])!r}")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    redact.filter(rec)
    assert "fdb_sandbox" not in (rec.exc_text or "") and "Bearer ***" in (rec.exc_text or "")
