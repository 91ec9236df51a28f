"""A real HTTP server on 127.0.0.1 for the download tests (a thread of the test, stopped at the end and
by a watchdog) and small files in the official shapes. No test contacts any other address.

The server speaks plain HTTP/1.1 with Range requests (and ``If-Range`` against its ETag), redirects, a
mode that cuts a response mid-file, and one that announces a ``Content-Length`` short of the file."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

from marble.fetch.http import Checksum

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """Serves ``files`` (path -> bytes); ``redirects`` (path -> location); ``cut`` (path -> byte count at
    which the next full response is cut off once); ``etags`` (path -> ETag sent, and compared with a
    request's ``If-Range``: a mismatch gets the whole file); ``short`` (path -> bytes a full response
    announces and sends less than the file). Records every request (path, Range header, status)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.cut: dict[str, int] = {}
        self.etags: dict[str, str] = {}
        self.short: dict[str, int] = {}
        self.log: list[tuple[str, str | None, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                if path in server.redirects:
                    server.log.append((path, rng, 302))
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path not in server.files:
                    server.log.append((path, rng, 404))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files[path]
                start = 0
                if_range = self.headers.get("If-Range")
                asked = rng
                if rng and if_range is not None and if_range != server.etags.get(path):
                    rng = None  # RFC 9110: a validator that does not match gets the whole representation
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        server.log.append((path, rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    server.log.append((path, rng, 206))
                else:
                    self.send_response(200)
                    server.log.append((path, asked, 200))
                body = data[start:]
                if not rng and path in server.short:
                    body = body[: len(body) - server.short[path]]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if path in server.etags:
                    self.send_header("ETag", server.etags[path])
                self.end_headers()
                if path in server.cut and not rng:
                    n = server.cut.pop(path)
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # drop the connection mid-file
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.watchdog = threading.Timer(300, self.httpd.shutdown)  # never outlives a hung test

    def __enter__(self):
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc):
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def requests(self, path: str):
        return [(r, s) for p, r, s in self.log if p == path]


def blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def sha(b: bytes) -> Checksum:
    return Checksum("sha256", hashlib.sha256(b).hexdigest())


def wav_bytes(seconds=0.5, sr=16000, seed=0) -> bytes:
    buf = io.BytesIO()
    x = (np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 3000).astype(np.int16)
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def mp3_bytes(seed=0, seconds=1.0, sr=22050) -> bytes:
    buf = io.BytesIO()
    x = np.random.default_rng(seed).standard_normal(int(seconds * sr)).astype(np.float32) * 0.1
    sf.write(buf, x, sr, format="MP3")
    return buf.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def cli(*args, timeout=300):
    return cli_as([], *args, timeout=timeout)


def unprivileged() -> list[str]:
    """A command prefix under which file permissions apply: none for a normal user; for root, ``setpriv``
    dropping the capabilities that bypass them (the uid stays 0, so the interpreter remains readable)."""
    if os.geteuid() != 0:
        return []
    import shutil

    import pytest

    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps=-all", "--"]
    if subprocess.run(prefix + ["true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop capabilities here")
    return prefix


def cli_as(prefix: list[str], *args, timeout=300):
    return subprocess.run([*prefix, sys.executable, "-m", "marble", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
