"""Run a command on a pseudo-terminal, as an operator's shell would: what it wrote to the
screen and its exit code (progress bars are drawn only on a terminal)."""

from __future__ import annotations

import os
import pty


def run_on_pty(argv: list[str], env: dict | None = None) -> tuple[int, str]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env if env is not None else dict(os.environ))
    screen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), screen.decode("utf-8", "replace")
