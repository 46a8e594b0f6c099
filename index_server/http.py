"""The vendor endpoint: index values over HTTP (JSON) and server-sent events (aiohttp).

Contract (the full API is spec/index-vendor-api.md):
- ``GET /indices``: ``{"event_seq": N, "indices": [IndexValue, ...]}``, the latest calculated
  state of every index after engine event N.
- ``GET /indices/{code}``: one ``IndexValue``; ``GET /indices/{code}/history[?since=N]``: the
  day's history; ``GET /indices/{code}/constituents``: the basket in force with coefficients
  and weights. Unknown code: 404; bad parameter: 400; both with ``{"error": "..."}``.
- ``GET /stream[?codes=A,B]``: ``text/event-stream``. Each message is one index state:
  ``id: <event_seq>``, ``event: index``, ``data: <IndexValue JSON>``. A new connection first
  gets the current state of every (selected) index, then every publication. With a
  ``Last-Event-ID: N`` header (or ``?last_event_id=N``) it gets instead the history points with
  ``event_seq >= N`` and then the live publications: nothing published after N is missed, and
  a value may come twice (a client keeps, per code, the highest ``seq`` seen and drops the
  rest; the server already drops what it sent on this connection). A comment line
  ``: keepalive`` is sent after ``keepalive_s`` of silence. A subscriber too slow for its
  queue is disconnected and resumes with ``Last-Event-ID``.
- Every number is a decimal string; JSON is encoded by msgspec; no float anywhere.
"""
from __future__ import annotations

import asyncio
import logging

import msgspec
from aiohttp import web

from index_server.service import IndexService

__all__ = ["VendorAPI"]

log = logging.getLogger("bourse.index")
_JSON = msgspec.json.Encoder()


class VendorAPI:
    def __init__(self, service: IndexService, *, keepalive_s: float = 15.0,
                 queue_size: int = 10_000) -> None:
        self.service = service
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self.app = web.Application(middlewares=[_refusals])
        self.app.add_routes([
            web.get("/indices", self._all),
            web.get("/indices/{code}", self._one),
            web.get("/indices/{code}/history", self._history),
            web.get("/indices/{code}/constituents", self._constituents),
            web.get("/stream", self._stream),
        ])
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task] = set()
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0: ephemeral); returns the actual address. OSError if not."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        sock = site._server.sockets[0]          # aiohttp keeps the listening server here
        self.host, self.port = host, sock.getsockname()[1]
        return self.host, self.port

    async def close(self) -> None:
        self.service.publisher.close()          # ends every stream's subscription
        if self._streams:
            await asyncio.wait(list(self._streams), timeout=2.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ handlers

    def _code(self, request: web.Request) -> str:
        code = request.match_info["code"]
        if code not in self.service.definitions:
            raise _error(404, f"unknown index {code!r} (indices: "
                              f"{', '.join(self.service.codes)})")
        return code

    async def _all(self, request: web.Request) -> web.Response:
        s = self.service
        return _json({"event_seq": s.event_seq, "indices": [s.current(c) for c in s.codes]})

    async def _one(self, request: web.Request) -> web.Response:
        return _json(self.service.current(self._code(request)))

    async def _history(self, request: web.Request) -> web.Response:
        code = self._code(request)
        since = _int_param(request.query.get("since"), "since")
        d = self.service.definitions[code]
        return _json({"code": code, "cadence_ms": d.cadence_ms,
                      "points": self.service.history(code, since or 0)})

    async def _constituents(self, request: web.Request) -> web.Response:
        code = self._code(request)
        calc = self.service.calc
        return _json({"code": code, "event_seq": self.service.event_seq,
                      "weight_cap_pct": calc.weight_cap_pct(code),
                      "constituents": calc.composition(code)})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        s = self.service
        codes = s.codes
        if "codes" in request.query:
            codes = [c for c in request.query["codes"].split(",") if c]
            unknown = [c for c in codes if c not in s.definitions]
            if unknown or not codes:
                raise _error(404 if unknown else 400,
                             f"unknown index {unknown[0]!r}" if unknown else "no index in codes")
        last_id = _int_param(request.headers.get("Last-Event-ID")
                             or request.query.get("last_event_id"), "Last-Event-ID")
        sub = s.publisher.subscribe(self.queue_size, codes)
        task = asyncio.current_task()
        self._streams.add(task)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 1000\n\n")
            sent: dict[str, int] = {}
            first = (s.history_since(last_id, codes) if last_id is not None
                     else [s.current(c) for c in codes])
            if first:
                await resp.write(b"".join(_sse(v) for v in first))
                for v in first:
                    sent[v.code] = v.seq
            while True:
                try:
                    v = await asyncio.wait_for(sub.get(), self.keepalive_s)
                except asyncio.TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if v is None:
                    break
                if v.seq <= sent.get(v.code, -1):
                    continue
                sent[v.code] = v.seq
                await resp.write(_sse(v))
        except ConnectionResetError:
            pass
        finally:
            sub.close()
            self._streams.discard(task)
        return resp


def _sse(v) -> bytes:
    return b"id: %d\nevent: index\ndata: %s\n\n" % (v.event_seq, _JSON.encode(v))


def _json(obj, status: int = 200) -> web.Response:
    return web.Response(body=_JSON.encode(obj), status=status, content_type="application/json")


class _Refused(Exception):
    """A request refused with ``status`` and a JSON ``{"error": message}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> _Refused:
    return _Refused(status, message)


@web.middleware
async def _refusals(request: web.Request, handler):
    try:
        return await handler(request)
    except _Refused as exc:
        return _json({"error": str(exc)}, exc.status)


def _int_param(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise _error(400, f"{name}: expected a non-negative integer, got {text!r}")
    return int(text)
