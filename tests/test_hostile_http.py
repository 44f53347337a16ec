"""Outbound HTTP against hostile servers on loopback: a server that trickles its answer,
one that sends a huge answer, one that refuses the key. Every call ends on time, within
its size cap, and a judge that never answered makes the evaluation fail (exit 1)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from sftlab.cli import main
from sftlab.evaluate.judge import JudgeClient, JudgmentCache
from sftlab.httpclient import JSONClient, RequestFailed

CHAT = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Rating: [[5]]"}}]}


class RawServer:
    """A loopback TCP server whose every connection is answered by ``behaviour(sock)``."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.recv(65536)
            self.requests += 1
            self.behaviour(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def trickle_body(conn, stop):
    body = json.dumps(CHAT).encode() * 100
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    for byte in body:
        if stop.is_set():
            return
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


def trickle_headers(conn, stop):
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10000:
        if stop.is_set():
            return
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


def huge(chunked: bool):
    def answer(conn, stop):
        block = b"x" * 2**20
        if chunked:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(50):
                conn.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(50 * len(block)).encode()
                         + b"\r\n\r\n")
            for _ in range(50):
                conn.sendall(block)
    return answer


def unauthorised(conn, stop):
    body = json.dumps({"error": {"message": "invalid api key"}}).encode()
    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_a_trickling_server_is_cut_off_at_the_deadline(behaviour):
    server = RawServer(behaviour)
    client = JSONClient(server.url, timeout=1.0, max_retries=1, backoff_base=0.01)
    start = time.monotonic()
    try:
        with pytest.raises(RequestFailed, match="timed out") as err:
            client.post("chat/completions", {"x": 1})
    finally:
        client.close()
        server.close()
    assert time.monotonic() - start < 3.5  # two attempts of 1 s, not 100 s of trickle
    assert err.value.attempts == 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_answer_is_refused_and_not_retried(chunked, tmp_path):
    server = RawServer(huge(chunked))
    judge = JudgeClient(server.url, "j", cache=JudgmentCache(tmp_path / "c.sqlite"),
                        max_retries=3, timeout=10, backoff_base=0.01,
                        max_response_bytes=2**20)
    try:
        result = judge.judge([{"role": "user", "content": "rate"}])
    finally:
        judge.close()
        server.close()
    assert result.text is None and "over the cap" in result.error
    assert server.requests == 1 and len(JudgmentCache(tmp_path / "c.sqlite")) == 0


def test_a_judge_refusing_the_key_fails_the_evaluation(tiny_llama, tmp_path, capsys):
    server = RawServer(unauthorised)
    questions = tmp_path / "question.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "category": "writing",
                                     "turns": ["Say hi.", "Again."]}) + "\n")
    try:
        code = main(["eval", "--model", str(tiny_llama), "--task", "mt_bench",
                     "--data", str(questions), "--max-new-tokens", "2", "--out",
                     str(tmp_path / "out"), "--judge-base-url", server.url, "--judge-model", "j"])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1, err
    assert "failed: mt_bench 0-shot: no item could be scored" in err
    assert server.requests == 2  # one per turn: a 401 is not retried
    assert not list(Path(tmp_path / "out").glob("evals/*.json"))
