"""Log lines of the command line: timestamped, on stderr, optionally as JSON and into a file.

Progress and outcomes are log lines (stderr); what a command is asked for
(the SQL of ``render``, the table of ``status``, ...) is its output (stdout),
so ``cohortflow render ... > model.sql`` stays clean.

* text: ``2026-11-15 02:30:07 [ingest] 2026-11-14 (run ...)``; warnings and
  errors carry ``warning:`` / ``error:``;
* json (``--log-format json``): one object per line, ``{"time", "level",
  "message"}``, time in ISO 8601 with the UTC offset;
* ``--quiet``: warnings and errors only on the terminal (a log file still gets
  everything);
* ``--log-file PATH``: every line is appended to the file too, in the same format.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import click

LOGGER = "cohortflow"
FORMATS = ("text", "json")

log = logging.getLogger(LOGGER)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: "}.get(record.levelno, "")
        lines = record.getMessage().splitlines() or [""]
        head = f"{stamp} {prefix}{lines[0]}"
        # Continuation lines of one message keep the first line's indentation under the time stamp.
        indent = " " * (len(stamp) + 1)
        return "\n".join([head, *(indent + line for line in lines[1:])])


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        return json.dumps(
            {"time": stamp, "level": record.levelname.lower(), "message": record.getMessage()}, ensure_ascii=False
        )


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (as click does), so tests and redirections see it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


_settings: dict = {"format": "text", "quiet": False, "file": None}


def configure(*, fmt: str | None = None, quiet: bool | None = None, file: Path | None = None) -> None:
    """Apply the log settings (each call overrides the ones it names); raise OSError if the file cannot be opened."""
    if fmt is not None:
        _settings["format"] = fmt
    if quiet is not None:
        _settings["quiet"] = quiet
    if file is not None:
        _settings["file"] = file
    formatter = _JsonFormatter() if _settings["format"] == "json" else _TextFormatter()
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    console = _StderrHandler(logging.WARNING if _settings["quiet"] else logging.INFO)
    console.setFormatter(formatter)
    log.addHandler(console)
    if _settings["file"] is not None:
        path = Path(_settings["file"])
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.setFormatter(formatter)
        log.addHandler(fh)
    log.setLevel(logging.INFO)
    log.propagate = False


def reset() -> None:
    """Back to the defaults (text, not quiet, no file): every command line starts from them."""
    _settings.update({"format": "text", "quiet": False, "file": None})
    configure()


def info(message: str) -> None:
    log.info(message)


def warning(message: str) -> None:
    log.warning(message)


def error(message: str) -> None:
    log.error(message)
