"""Every record this project logs, forwarded into the engine's own log.

canfar-core and the plugins log through module loggers (`canfar_core.tracker`,
`snakemake_executor_plugin_canfar.executor`, ...). Those reach neither Snakemake's
`.snakemake/log/*.log` nor a Prefect flow run's log on their own: the engines log
through loggers of theirs, and Python's last-resort handler only prints warnings to
stderr. While an engine runs, `forward_logs` hands each record to a sink of the
engine's (its logger's `log` method) and stops propagation, so every line, warnings
about retries and outages included, lands once, where the engine keeps its log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

Sink = Callable[[int, str], object]
CORE_LOGGER = "canfar_core"


class EngineLogHandler(logging.Handler):
    """Hands each record's level and formatted message to `sink`."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink(record.levelno, self.format(record))
        except Exception:  # a log line must never break the run
            self.handleError(record)


def forward_logs(sink: Sink, names: Iterable[str] = (CORE_LOGGER,)) -> Callable[[], None]:
    """Forward the records of the loggers `names` (and their children) to `sink`.

    Returns the function that undoes it (call it when the engine's run ends).
    """
    handler = EngineLogHandler(sink)
    attached: list[tuple[logging.Logger, bool, int]] = []
    for name in dict.fromkeys(names):
        logger = logging.getLogger(name)
        attached.append((logger, logger.propagate, logger.level))
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)  # the engine's handlers decide what shows

    def undo() -> None:
        for logger, propagate, level in attached:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)

    return undo
