"""Real `statusd` subprocesses for tests: start with an env, wait for HTTP, stop, prove nothing is left.

Generic on purpose (any verb, any env): `up`, `serve`, `worker`, `consume`, `simulate` tests all use it.

    proc = start_statusd(["serve", "--port", str(port)], env=settings_env(settings), log_dir=tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        ...
        assert stop_process(proc, signal.SIGINT) == 0
    finally:
        proc.kill_tree()
    assert_no_process_left(str(tmp_path))

Every wait is bounded by a deadline; every process started here is reaped by `kill_tree` (idempotent,
safe in `finally`), which also kills descendants (embedded redis-server, celery children) it saw.
Output goes to log files (never a pipe that could fill up and block the child); failures quote the tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from statusd.redis_runtime import free_port as free_port  # tests import it from here

DEFAULT_START_TIMEOUT_S = 90.0
DEFAULT_STOP_TIMEOUT_S = 30.0


CLI_TIMEOUT_S = 90.0


def run_statusd(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    timeout: float = CLI_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run one `statusd` verb to completion, output captured.

    A verb that outlives `timeout` is made to print every thread's stack (faulthandler on
    SIGABRT) and the test fails with it, instead of the test's own timeout firing later with
    nothing to show of the child."""
    with subprocess.Popen(
        [*statusd_command(), *args],
        env={**env, "PYTHONFAULTHANDLER": "1"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise AssertionError(
                f"`statusd {' '.join(args)}` still running after {timeout:.0f} s; its stacks:\n"
                f"{err[-8000:]}\nstdout:\n{out[-2000:]}"
            ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


async def run_statusd_async(
    args: Sequence[str], env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """`run_statusd` off the event loop, so the test's own tasks (a heartbeat) go on meanwhile."""
    return await asyncio.to_thread(run_statusd, args, env)


def statusd_command() -> list[str]:
    """How to run the `statusd` console script of the Python running the tests (the repo's .venv)."""
    beside = Path(sys.executable).with_name("statusd")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("statusd")
    if found:
        return [found]
    return [sys.executable, "-c", "from statusd.cli import main; main()"]


@dataclass
class ManagedProcess:
    """A subprocess in its own session, with its output in `log_path`, and the descendants it had."""

    popen: subprocess.Popen[bytes]
    args: list[str]
    log_path: Path
    seen_descendants: dict[int, float] = field(default_factory=dict)  # pid -> create_time

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def remember_descendants(self) -> None:
        """Record the current process tree so kill_tree can reach it even after the parent is gone."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen_descendants[child.pid] = child.create_time()

    def listens_on(self, port: int) -> bool:
        """Whether this process or one of its descendants holds a listening socket on `port`."""
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for member in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    for conn in member.net_connections(kind="inet"):
                        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                            return True
        return False

    def send(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.remember_descendants()
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit (raises subprocess.TimeoutExpired after `timeout`)."""
        return self.popen.wait(timeout)

    def kill_tree(self, timeout: float = 10.0) -> None:
        """SIGKILL the process, its process group and every descendant ever seen; reap. Idempotent."""
        self.remember_descendants()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        for pid, created in self.seen_descendants.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 0.01:  # same process, not a recycled pid
                    proc.kill()
                    proc.wait(timeout)


def start_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log_dir: str | Path | None = None,
    name: str | None = None,
) -> ManagedProcess:
    """Start `args` in a new session (its own process group) with output to `<log_dir>/<name>.log`."""
    directory = (
        Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="statusd-proc-"))
    )
    directory.mkdir(parents=True, exist_ok=True)
    label = name or Path(args[0]).name
    log_path = directory / f"{label}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # signals we send reach only it; kill_tree can kill its group
        )
    return ManagedProcess(popen=popen, args=list(args), log_path=log_path)


def start_statusd(
    verb_args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> ManagedProcess:
    """Start `statusd <verb_args...>` (e.g. ["serve", "--port", "8081"]) with exactly `env`."""
    name = "statusd-" + (verb_args[0] if verb_args else "help")
    return start_process(
        [*statusd_command(), *verb_args], env=env, cwd=cwd, log_dir=log_dir, name=name
    )


def http_status(
    url: str, *, timeout: float = 2.0, headers: Mapping[str, str] | None = None
) -> int | None:
    """The HTTP status of a GET, or None when nothing answers (refused, reset, timeout)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def wait_for_http(
    url: str,
    *,
    status: int = 200,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    proc: ManagedProcess | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Poll `url` until `proc` (or a descendant) answers it with `status`; fail early (with its
    log) if `proc` exits first.

    With `proc`, an answer counts only once `proc`'s tree listens on the url's port: a server
    restarted on its old port is slow to bind, and until it does another test's process that
    drew the freed port may answer in its place."""
    deadline = time.monotonic() + timeout
    port = urllib.parse.urlsplit(url).port
    last: int | str | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.returncode is not None:
            raise AssertionError(
                f"{proc.args} exited with {proc.returncode} before {url} answered {status}:\n{proc.log_tail()}"
            )
        last = http_status(url, headers=headers)
        if last == status:
            if proc is None:
                return
            if port is None or proc.listens_on(port):
                proc.remember_descendants()
                return
            last = f"{status} from a process outside {proc.args[:3]}'s tree"
        time.sleep(0.2)
    tail = f"\n{proc.log_tail()}" if proc is not None else ""
    raise AssertionError(f"{url} did not answer {status} within {timeout}s (last: {last}){tail}")


def wait_for_log(
    proc: ManagedProcess, text: str, *, timeout: float = DEFAULT_START_TIMEOUT_S
) -> str:
    """Wait until `text` appears in the process's output; returns the whole log so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proc.log_tail(10_000_000)
        if text in log:
            return log
        if proc.returncode is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the output of {proc.args}:\n{proc.log_tail()}")


async def wait_for_http_async(url: str, **kwargs: object) -> None:
    """`wait_for_http` for async tests, off the event loop thread."""
    await asyncio.to_thread(wait_for_http, url, **kwargs)  # type: ignore[arg-type]


def stop_process(
    proc: ManagedProcess, sig: int = signal.SIGINT, *, timeout: float = DEFAULT_STOP_TIMEOUT_S
) -> int:
    """Send `sig` and wait for a clean exit; returns the exit code (AssertionError if it hangs)."""
    proc.send(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log = proc.log_tail()
        proc.kill_tree()
        raise AssertionError(
            f"{proc.args} did not exit within {timeout}s of signal {sig}:\n{log}"
        ) from None


def assert_tree_gone(proc: ManagedProcess, timeout: float = 10.0) -> None:
    """The process and every descendant it was seen with have exited (pid reuse is ruled out)."""
    deadline = time.monotonic() + timeout
    alive: list[str] = []
    while time.monotonic() < deadline:
        alive = []
        for pid, created in proc.seen_descendants.items():
            with contextlib.suppress(psutil.Error):
                child = psutil.Process(pid)
                if (
                    abs(child.create_time() - created) < 0.01
                    and child.status() != psutil.STATUS_ZOMBIE
                ):
                    alive.append(f"{pid}: {' '.join(child.cmdline())}")
        if proc.returncode is not None and not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"{proc.args} left processes running:\n" + "\n".join(alive))


def processes_matching(marker: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose command line contains `marker` (a tmp dir, a port...)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
    return found


def assert_no_process_left(*markers: str, timeout: float = 10.0) -> None:
    """Every process mentioning one of `markers` is gone (waits up to `timeout` for exits in flight)."""
    deadline = time.monotonic() + timeout
    left: list[psutil.Process] = []
    while time.monotonic() < deadline:
        left = [p for marker in markers for p in processes_matching(marker)]
        if not left:
            return
        time.sleep(0.2)
    described = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())}")
        with contextlib.suppress(psutil.Error):
            proc.kill()  # do not leak them into the next test, but still fail this one
    raise AssertionError("processes left behind:\n" + "\n".join(described))


@contextlib.contextmanager
def running_statusd(
    verb_args: Sequence[str],
    *,
    env: Mapping[str, str],
    ready_url: str | None = None,
    cwd: str | Path | None = None,
    log_dir: str | Path | None = None,
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> Iterator[ManagedProcess]:
    """`statusd <verb>` for the duration of a with-block; waits for `ready_url`; always reaped."""
    proc = start_statusd(verb_args, env=env, cwd=cwd, log_dir=log_dir)
    try:
        if ready_url is not None:
            wait_for_http(ready_url, timeout=timeout, proc=proc)
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(AssertionError):
                stop_process(proc, signal.SIGTERM, timeout=15)
        proc.kill_tree()


@contextlib.contextmanager
def all_running(*managers: contextlib.AbstractContextManager[Any]) -> Iterator[list[Any]]:
    """Enter `managers` (`running_api`, `running_worker`, `running_beat`...) side by side, each in
    a thread of its own, and leave them side by side too; yields their values in order.

    Each of them starts a process and waits until it is ready, or stops it and waits for its exit:
    one after the other, a stack of processes spends most of its start and stop waiting on each in
    turn. For managers whose exit is cleanup only (a `finally`), as the process managers here are:
    they are left as on a normal exit even when the block raised. When one fails to start, the
    ones that did start are left again, then its exception is raised."""
    with ThreadPoolExecutor(max_workers=max(len(managers), 1)) as pool:
        entering = [pool.submit(m.__enter__) for m in managers]
        try:
            failures = [f.exception() for f in entering]  # waits for every one of them
        except BaseException:  # interrupted meanwhile (a test's timeout): stop what did start
            for m, f in zip(managers, entering, strict=True):
                if f.exception() is None:
                    m.__exit__(None, None, None)
            raise
        started = [m for m, failed in zip(managers, failures, strict=True) if failed is None]
        try:
            for failed in failures:
                if failed is not None:
                    raise failed
            yield [f.result() for f in entering]
        finally:
            leaving = [pool.submit(m.__exit__, None, None, None) for m in started]
            for f in leaving:
                f.result()
