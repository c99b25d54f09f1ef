"""What one client can hold, and for how long, before a request of its own is even read.

uvicorn alone lets a connection that sends nothing stay open for ever, and its only limit,
``limit_concurrency``, counts those idle connections too: about 511 of them made every other
request a plain-text 503 (measured, issue #38). So the server runs uvicorn with the protocol
of ``guarded_protocol`` instead (its own httptools protocol, extended):

- a request head (request line and headers) must be complete within ``--header-timeout``
  seconds of the connection's start, or of the first byte of a later request on it; a connection
  that sent nothing by then is closed, one stalled in its head gets a 408 problem body first. After
  a response, uvicorn's own keep-alive timer (``--keep-alive``) closes an idle connection;
- a head over ``MAX_HEAD_BYTES`` gets a 431 (llhttp sets no limit of its own);
- at most ``--max-connections`` connections in all and ``--max-client-connections`` from one
  address: one more is answered at once with the service's JSON 503 (kind ``overloaded``,
  ``Retry-After``), written to the socket before any request is read, and closed.

Every refusal is counted (``squeezenet_errors_total`` by kind, ``squeezenet_connections_closed_total``
by reason). Behind a reverse proxy every client has the proxy's address: the per-client limit
is then the proxy's to apply (docs/serving.md).
"""

from __future__ import annotations

import collections
import http
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from squeezenet.serving.metrics import Metrics
from squeezenet.serving.problems import RequestProblem, problem_headers
from squeezenet.serving.schemas import ProblemBody

MAX_HEAD_BYTES = 64 << 10  # request line and headers: h11's default is 16 KB, nginx's buffers 32 KB
LINGER_S = 2.0  # a refused connection is read (and dropped) this long, so the client's request is not reset
# refused connections lingering at once, beyond which they are closed at once: a client reconnecting
# in a loop must not hold a file descriptor per attempt
MAX_LINGERING = 128


class ConnectionGuard:
    """The connections open, in all and by client address, against their limits."""

    def __init__(
        self, max_connections: int, max_per_client: int, header_timeout: float, metrics: Metrics | None = None
    ) -> None:
        self.max_connections, self.max_per_client, self.header_timeout = max_connections, max_per_client, header_timeout
        self.metrics = metrics
        self.total = 0
        self.by_client: collections.Counter[str] = collections.Counter()
        self.lingering = 0
        if metrics is not None:
            metrics.connections.set_function(lambda: self.total)

    def admit(self, host: str) -> tuple[str, RequestProblem] | None:
        """Count a new connection from ``host``; over a limit -> (the reason, the problem to answer with)."""
        if self.total >= self.max_connections:
            message = f"{self.total} connections are open, the server's limit (--max-connections)"
            return "too_many_connections", RequestProblem(503, "overloaded", message)
        if self.by_client[host] >= self.max_per_client:
            message = (
                f"{self.by_client[host]} connections from {host} are open, the limit for one client "
                "(--max-client-connections)"
            )
            # its own connections free up as they finish or time out
            wait = max(1, round(self.header_timeout))
            return "too_many_from_client", RequestProblem(503, "overloaded", message, retry_after=wait)
        self.total += 1
        self.by_client[host] += 1
        return None

    def leave(self, host: str) -> None:
        self.total -= 1
        self.by_client[host] -= 1
        if self.by_client[host] <= 0:
            del self.by_client[host]

    def closed(self, reason: str, problem: RequestProblem | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.connections_closed.labels(reason=reason).inc()
        if problem is not None:
            self.metrics.errors.labels(kind=problem.kind).inc()


def problem_bytes(problem: RequestProblem, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response with the problem body, for writing straight to a socket."""
    body = json.dumps(ProblemBody.of(problem), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close"}
    headers.update(problem_headers(problem))
    lines = [f"HTTP/1.1 {problem.status} {http.HTTPStatus(problem.status).phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [f"{name}: {value}".encode() for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guard's limits and the header timeout."""

    guard: ConnectionGuard  # set by ``guarded_protocol``

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._host = self.client[0] if self.client else ""
        self._head_timer = None
        self._head_bytes = 0
        self._head_started = False
        self._admitted = self._lingering = False
        refused = self.guard.admit(self._host)
        if refused is not None:
            self._refuse(*refused)
            return
        self._admitted = True
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        if self._admitted:
            self._admitted = False
            self.guard.leave(self._host)
        if self._lingering:
            self._lingering = False
            self.guard.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return  # a refused connection: read and dropped, never parsed
        super().data_received(data)
        if self._head_timer is not None and not self.transport.is_closing():  # a head still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                problem = RequestProblem(
                    431, "header_too_large", f"the request line and headers are over {MAX_HEAD_BYTES:,} bytes"
                )
                self._answer_and_close(problem, "header_too_large")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP, as a problem body like every other refusal."""
        problem = RequestProblem(400, "bad_request", f"not a valid HTTP/1.1 request ({msg.rstrip('.')})")
        self._answer_and_close(problem, "bad_request")

    def eof_received(self) -> bool | None:
        if not self._admitted:
            return False  # the client is done sending: close
        return super().eof_received()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if self._head_timer is None:  # a later request on a kept-alive connection: its own time
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    # ---------------------------------------------------------------- timers and refusals
    def _arm_head_timer(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.guard.header_timeout, self._on_head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _on_head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._head_started:  # not a byte: nothing to answer, the connection just goes
            self.guard.closed("idle")
            self.transport.close()
            return
        timeout = self.guard.header_timeout
        problem = RequestProblem(
            408, "header_timeout", f"the request head did not arrive within {timeout:g} s (--header-timeout)"
        )
        self._answer_and_close(problem, "header_timeout")

    def _answer_and_close(self, problem: RequestProblem, reason: str) -> None:
        self._cancel_head_timer()
        self.guard.closed(reason, problem)
        self.transport.write(problem_bytes(problem, self.server_state.default_headers))
        self.transport.close()

    def _refuse(self, reason: str, problem: RequestProblem) -> None:
        """Answer before reading anything, then half-close and drain a moment: closing with the
        client's request unread would reset the connection, and the client might never see the 503."""
        self.guard.closed(reason, problem)
        self.transport.write(problem_bytes(problem, self.server_state.default_headers))
        if self.guard.lingering < MAX_LINGERING and self.transport.can_write_eof():
            self.transport.write_eof()
            self._lingering = True
            self.guard.lingering += 1
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` that answers to ``guard`` (one per server:
    uvicorn builds a protocol per connection from the class alone)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": guard})
