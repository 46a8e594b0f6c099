"""Background fdatasync of the journal: the sequencing loop never waits for the disk.

Contract:

- ``BackgroundSync(writer, on_durable, threads=N)`` runs N threads that make the data the
  writer has handed to the OS durable. The loop calls ``request()`` after each
  ``commit(defer_sync=True)``; an idle thread calls ``writer.sync_written()`` (one fdatasync
  covering everything written so far) and then ``on_durable(offset, None)``, where ``offset``
  is the end of the durable data. With N > 1 a batch written while a sync is in flight gets
  its own sync at once instead of waiting for that one to end (the device overlaps them).
- ``on_durable`` is called from the sync threads: the caller passes a thread-safe function
  (the engine server wraps ``loop.call_soon_threadsafe``). With several threads, offsets may
  be reported out of order; every reported offset is durable.
- A failed fdatasync is reported once as ``on_durable(None, exc)`` and the thread stops:
  after a failed fsync the page cache can no longer be trusted (fail-stop, as in the writer).
- ``close()`` stops the thread after a last sync of what was requested, and joins it; call
  it before closing the writer.

Why a thread: an fdatasync takes 0.15-0.5 ms on a typical virtual disk. Done on the event
loop, it stops the engine from reading, matching and answering for that long on every
batch; in a thread (the call releases the GIL) the loop matches the next batch meanwhile,
and a command waits at most for the sync in progress plus its own.
"""
from __future__ import annotations

import sys
import threading
from typing import Callable, Optional

from engine.journal import JournalWriter

__all__ = ["BackgroundSync"]

SWITCH_INTERVAL_S = 0.0001
OnDurable = Callable[[Optional[int], Optional[BaseException]], None]


class BackgroundSync:
    def __init__(self, writer: JournalWriter, on_durable: OnDurable, threads: int = 1) -> None:
        self._writer = writer
        self._on_durable = on_durable
        self._cond = threading.Condition()
        self._wanted = False
        self._stopping = False
        self._failed = False
        # After its fdatasync a thread needs the GIL back for a moment to report; with the
        # default 5 ms switch interval a busy loop would hold the report back that long.
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._threads = [threading.Thread(target=self._run, name=f"journal-sync-{i}",
                                          daemon=True) for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    def request(self) -> None:
        """Ask for a sync of everything written so far (cheap; call after each commit). An
        idle thread starts one at once, even while another thread's sync is in flight."""
        with self._cond:
            if not self._wanted:
                self._wanted = True
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def _run(self) -> None:
        cond = self._cond
        writer = self._writer
        while True:
            with cond:
                while not self._wanted and not self._stopping:
                    cond.wait()
                if not self._wanted or self._failed:
                    return
                self._wanted = False
            try:
                offset = writer.sync_written()
            except BaseException as exc:  # reported (once) to the loop, which fail-stops
                with cond:
                    first, self._failed = not self._failed, True
                if first:
                    self._on_durable(None, exc)
                return
            self._on_durable(offset, None)
