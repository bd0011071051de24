"""What the running service owns for governance: the feedback writer and a maintenance thread.

The maintenance thread links feedback that arrived before its call's record (after an outage the
two may be written in either order) and, when ``retention_days`` is set, purges old audit rows
every ``retention_interval_hours``. Several replicas may purge at once: deletes are idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.governance.catalogue import Catalogue
from service.governance.database import purge
from service.governance.feedback import FeedbackWriter, relink

__all__ = ["Governance", "GovernanceDep", "get_governance"]

log = logging.getLogger("calf_cds.governance")


@dataclass
class Governance:
    settings: Settings
    engine: Engine
    feedback: FeedbackWriter
    clock: Callable[[], datetime]
    relink_seconds: float = 60.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        maintenance_seconds: float = 60.0,
    ) -> Governance:
        """Start the feedback writer and the maintenance thread; ``clock`` is the app's "now"."""
        writer = FeedbackWriter(engine, settings.data_dir / "spool")
        writer.start()
        governance = cls(
            settings=settings,
            engine=engine,
            feedback=writer,
            clock=clock,
            relink_seconds=maintenance_seconds,
        )
        governance._warn_about_packs()
        governance._thread = threading.Thread(target=governance._maintain, name="governance", daemon=True)
        governance._thread.start()
        return governance

    def stop(self, timeout: float = 10.0) -> None:
        """Stop maintenance and flush the feedback writer, within about ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout / 2)
        self.feedback.stop(max(0.5, deadline - time.monotonic()))

    def catalogue(self) -> Catalogue:
        return Catalogue.discover(self.settings.rules_dir)

    def _warn_about_packs(self) -> None:
        manifest = self.catalogue().manifest
        status = manifest.status(self.settings.active_pack)
        if status != "active":
            log.warning("the active pack %s is %s, not a released version", self.settings.active_pack, status)

    def _maintain(self) -> None:
        next_purge = time.monotonic()
        while not self._stop.wait(self.relink_seconds):
            try:
                with self.engine.begin() as connection:
                    relink(connection)
                if self.settings.retention_days is not None and time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + self.settings.retention_interval_hours * 3600
                    result = purge(self.engine, retention_days=self.settings.retention_days, now=self.clock())
                    log.info("retention: deleted %s", result.describe())
            except SQLAlchemyError as error:
                log.warning("governance maintenance skipped: %s", type(error).__name__)


def get_governance(request: Request) -> Governance:
    value: Governance = request.app.state.governance
    return value


GovernanceDep = Annotated[Governance, Depends(get_governance)]
