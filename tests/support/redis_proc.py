"""Real redis-server processes for tests (never fakeredis)."""

from __future__ import annotations

from pathlib import Path

from statusd.redis_runtime import EmbeddedRedis


class RedisProcess(EmbeddedRedis):
    """A test Redis: start, stop, kill -9, restart on the same port (AOF keeps data across)."""

    def __init__(self, data_dir: Path, *, appendonly: bool = False, port: int = 0) -> None:
        super().__init__(data_dir=data_dir, port=port, appendonly=appendonly)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> str:
        self.stop()
        return self.start()
