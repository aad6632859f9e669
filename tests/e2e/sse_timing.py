"""One streamed (SSE) request, timed as its user feels it: when it was sent,
when each event that carried text arrived, when the stream ended.

A raw socket with TCP_NODELAY rather than an HTTP client library, so that
each arrival is stamped when its bytes reach this process (client libraries
buffer lines or chunks, which would blur the inter-token gaps the latency
benchmarks and the stall-free test measure). Used by tests/e2e/test_stall_free.py,
tests/bench/bench_latency.py and tests/bench/bench_serving.py."""
import json
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Streamed:
    sent: float                      # time.perf_counter() when the request was sent
    arrivals: list = field(default_factory=list)  # arrival of each event with text, in order
    done: float = 0.0                # when the server closed the stream
    usage: dict | None = None        # the usage event's "usage", if the request asked for it

    @property
    def ttft(self):
        return self.arrivals[0] - self.sent if self.arrivals else None

    @property
    def gaps(self):
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]


def _has_text(choice):
    return bool(choice.get("text") or (choice.get("delta") or {}).get("content"))


def _tokens(choice):
    """Tokens an event carries, from its logprobs (completions: tokens; chat:
    content): a token whose text is held back (part of a UTF-8 character)
    still has its logprob entry, so this counts every token the worker
    produced, not only those that completed a character."""
    lp = choice.get("logprobs") or {}
    if isinstance(lp.get("tokens"), list):
        return len(lp["tokens"])
    if isinstance(lp.get("content"), list):
        return len(lp["content"])
    return 0


def stream(port, body, path="/v1/completions", on_token=None, per_token=False):
    """POSTs `body` to the gateway on 127.0.0.1:`port` and reads its SSE stream
    to the end. `on_token(now)` is called at each arrival as it happens (for
    callers that watch streams while something else runs). An error event
    raises RuntimeError.

    per_token: an arrival per generated token instead of per event with text
    (the request must ask for logprobs): the gaps are then the worker's steps
    as this stream saw them, without the waits of characters that span two
    tokens."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    result = Streamed(sent=time.perf_counter())
    s.sendall(head + data)
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            now = time.perf_counter()
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                i = event.find(b"data: ")
                if i < 0 or event[i + 6:] == b"[DONE]":
                    continue
                j = json.loads(event[i + 6:])
                if "error" in j:
                    raise RuntimeError(j)
                if j.get("usage"):
                    result.usage = j["usage"]
                choices = j.get("choices", [])
                n = sum(_tokens(c) for c in choices) if per_token else int(any(_has_text(c) for c in choices))
                for _ in range(n):
                    result.arrivals.append(now)
                    if on_token is not None:
                        on_token(now)
    finally:
        s.close()
    result.done = time.perf_counter()
    return result
