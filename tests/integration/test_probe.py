"""One health probe: an overall deadline, a cap on what it reads, never through a proxy (loopback servers)."""

import socket
import threading
import time

import pytest

from sidecar_plugin.shell.listener.probe import Prober, health_url


class Server:
    """A loopback server that answers every connection with ``answer(conn)``; closed by the test."""

    def __init__(self, answer):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.recv(4096)
            self.answer(conn, self.done)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.done.set()
        self.sock.close()


@pytest.fixture
def serve():
    made = []

    def make(answer):
        s = Server(answer)
        made.append(s)
        return Prober(health_url("127.0.0.1", s.port))

    yield make
    for s in made:
        s.close()


def test_a_healthy_answer(serve):
    prober = serve(lambda c, done: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n\"I'm alive!\""))
    r = prober.probe(2.0)
    assert r.ok
    assert r.detail == "HTTP 200"


def test_a_chunked_answer_and_an_answer_until_close(serve):
    chunked = serve(lambda c, done: c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                              b"5\r\nhello\r\n0\r\n\r\n"))
    until_close = serve(lambda c, done: c.sendall(b"HTTP/1.0 200 OK\r\n\r\nalive"))
    assert chunked.probe(2.0).ok
    assert until_close.probe(2.0).ok


def test_an_error_status_is_a_failure(serve):
    r = serve(lambda c, done: c.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")).probe(2.0)
    assert not r.ok
    assert r.detail == "HTTP 503"


def trickle(conn, done):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    while not done.is_set():
        conn.sendall(b"x")
        time.sleep(0.2)


def test_a_trickling_answer_ends_at_the_overall_deadline(serve):
    # every read gets a byte well within any per-read timeout; the whole answer never does
    prober = serve(trickle)
    t0 = time.monotonic()
    r = prober.probe(1.0)
    assert not r.ok
    assert "no complete answer within 1 s" in r.detail
    assert time.monotonic() - t0 < 3.0


def endless(conn, done):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    block = b"y" * 65536
    for _ in range(1600):  # at most 100 MB if the cap failed: bounded
        if done.is_set():
            return
        conn.sendall(block)


def test_an_endless_body_is_cut_at_the_cap(serve):
    r = serve(endless).probe(5.0)
    assert not r.ok
    assert "larger than" in r.detail


def test_no_answer_at_all(serve):
    r = serve(lambda c, done: done.wait(5)).probe(0.5)
    assert not r.ok
    assert "within 0.5 s" in r.detail


def test_refused_and_never_through_a_proxy(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    r = Prober(health_url("127.0.0.1", port)).probe(1.0)
    assert not r.ok
    assert r.detail == "connection refused"


def test_probes_run_side_by_side(serve):
    # a slow answer does not hold the next probe: two probes at once both complete
    spans = []  # (from, to) of each request as the server saw it: probes in turn would never overlap

    def slow(c, done):
        began = time.monotonic()
        time.sleep(0.5)
        spans.append((began, time.monotonic()))  # before the answer: recorded by the time the probe returns
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    prober = serve(slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(prober.probe(3.0))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [r.ok for r in results] == [True, True]
    assert len(spans) == 2, spans
    assert max(b for b, _ in spans) < min(e for _, e in spans), f"the two requests did not overlap: {spans}"


def test_ipv6_and_wildcard_urls():
    assert health_url("0.0.0.0", 4100) == "http://127.0.0.1:4100/health/liveliness"
    assert health_url("::", 4100) == "http://[::1]:4100/health/liveliness"
    p = Prober(health_url("::1", 4100))
    assert (p.host, p.port, p.path) == ("::1", 4100, "/health/liveliness")
