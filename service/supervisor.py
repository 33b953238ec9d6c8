"""Serving with uvicorn under ``python -m service``: one process, or a parent supervising
several workers (uvicorn's own supervisor, with what an orchestrator needs added)."""

from __future__ import annotations

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess


class Supervisor(Multiprocess):
    """uvicorn's multiprocess supervisor, which

    - records that a worker failed to start (uvicorn stops the service then, but its parent
      exited with status 0: a supervisor, or Docker's ``--restart on-failure``, took that for a
      clean stop);
    - stops listening as soon as it stops: uvicorn's parent kept its copy of the listening socket
      open until it exited, more than a second after its workers, so the kernel went on accepting
      connections no worker would take, then reset them. Closed at once, new connections are
      refused once the workers have closed theirs; requests begun are still answered.
    """

    failed = False

    def keep_subprocess_alive(self) -> None:
        """uvicorn's check of the workers; the only stop it decides on is a failed start."""
        stopping = self.should_exit.is_set()
        super().keep_subprocess_alive()
        if self.should_exit.is_set() and not stopping:
            self.failed = True

    def terminate_all(self) -> None:
        """Close the parent's listening sockets, then ask every worker to stop."""
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def serve(config: uvicorn.Config) -> bool:
    """Serve until stopped (SIGTERM, SIGINT); False when the server or a worker failed to start."""
    if config.workers == 1:
        server = uvicorn.Server(config)
        server.run()
        return server.started
    supervisor = Supervisor(config, [config.bind_socket()])
    supervisor.run()
    return not supervisor.failed
