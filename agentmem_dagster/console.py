"""The runs' console logger: Dagster's own, except that a failure is shown as one line with its
cause instead of a stack trace (the UI keeps the trace, and so does `--log-level DEBUG`)."""

import logging
import re

import dagster as dg

STACK_TRACE = re.compile(r"\n*Stack Trace:\n(?:(?:  .*)?\n)*")


def error_text(error) -> str:
    """A failure's message (a SerializableErrorInfo): the StoreUnavailable in its chain of causes
    when there is one (it names the setting to change), else the root cause's."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    found = next((e for e in chain if e.cls_name == "StoreUnavailable"), chain[-1])
    return found.message.strip().split(f"{found.cls_name}: ", 1)[-1]


def _one_line_failures(record: logging.LogRecord) -> bool:
    """Replace the error Dagster appends to a failure event by its cause in one line, and drop
    any stack trace left in the message itself (a child process's error is quoted there)."""
    text = record.getMessage()
    event = getattr(record, "dagster_event", None)
    error = getattr(event.event_specific_data, "error", None) if event is not None else None
    if error is not None:
        text = text.split("\n\n", 1)[0] + " " + error_text(error)
    record.msg, record.args = STACK_TRACE.sub("\n", text).strip(), ()
    return True


@dg.logger(dg.colored_console_logger.config_schema, description=__doc__)
def console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    if logger.level > logging.DEBUG:
        for handler in logger.handlers:
            handler.addFilter(_one_line_failures)
    return logger
