"""Run a test body in a separate worker process, so that one native crash fails one test.

Model-zoo tests run native kernels (oneDNN, MKL, OpenMP) on many shapes. A kernel that corrupts
memory kills the interpreter: in-process, pytest dies with it and prints no summary. Here the body
runs in a long-lived worker started with ``spawn`` (no fork of a process whose OpenMP threads are
running); if the worker dies (a signal) or stops answering (a hang), the test that was running
fails with that reason, and the next test gets a fresh worker. Exceptions raised in the worker are
re-raised in the test with the worker's traceback.

The worker is started once per test session and reused, so the cost is one interpreter start
(plus one more per crash), not one per test.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

#: Longest a single isolated call may take before it counts as a hang (seconds).
DEFAULT_TIMEOUT_S = 600.0


class NativeCrash(AssertionError):
    """The worker process died (a signal or exit) or hung while running a test body."""


def _serve(conn: Connection) -> None:
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except EOFError:  # the test session ended
            return
        try:
            conn.send((True, fn(*args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the test
            is_assertion = isinstance(exc, AssertionError)
            conn.send((False, (is_assertion, f"{type(exc).__name__}: {exc}", traceback.format_exc())))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class IsolatedWorker:
    """One worker process that runs picklable module-level functions on request."""

    def __init__(self) -> None:
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="unetkit-isolated-test")
        self._proc.start()
        child.close()

    def _discard(self) -> str:
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if proc is None:
            return "did not exit"
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
            return "hung and was killed"
        return _describe_exit(proc.exitcode)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in the worker; its result, its exception, or :class:`NativeCrash`."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        assert self._conn is not None
        what = f"{fn.__module__}.{fn.__qualname__}{args!r}"
        self._conn.send((fn, args, kwargs))
        if not self._conn.poll(timeout):
            self._proc.kill()
            raise NativeCrash(f"{what} did not finish within {timeout:.0f} s; the worker {self._discard()}")
        try:
            ok, value = self._conn.recv()
        except (EOFError, ConnectionResetError):
            raise NativeCrash(f"the test worker {self._discard()} while running {what} "
                              "(a native crash: see docs/known_issues.md)") from None
        if ok:
            return value
        is_assertion, message, worker_traceback = value
        error = AssertionError if is_assertion else RuntimeError
        raise error(f"{message}\n--- in the isolated worker ---\n{worker_traceback}")

    def close(self) -> None:
        if self._proc is not None:
            self._discard()


_WORKER = IsolatedWorker()
atexit.register(_WORKER.close)


def run_isolated(fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> Any:
    """Run ``fn`` (a module-level function of an importable module) in the shared test worker."""
    return _WORKER.call(fn, *args, timeout=timeout, **kwargs)
