"""What `seqlvm serve` deploys and how: the model, the address it answers on, its replicas, how often it reads the
alias it follows, and the limits of one request. Checked before Ray starts."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

from pipelines.errors import SeqlvmError
from seqlvm.operations import Limits

DEFAULT_PORT = 8000
DEFAULT_APP = "seqlvm"


@dataclass(frozen=True)
class ServeSettings:
    model_uri: str
    tracking_uri: str | None = None
    name: str = DEFAULT_APP  # the Serve application's name
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; replaces `replicas`
    poll_s: float = 5.0  # how often each replica reads the alias it follows
    max_batch_size: int = 16  # requests answered by one model call
    batch_wait_s: float = 0.005  # how long a request waits for others to join its batch
    replica_cpus: float = 1.0
    limits: Limits = field(default_factory=Limits)

    def check(self) -> None:
        """One line for a value Serve would refuse late or obscurely."""
        if self.autoscale is None and self.replicas < 1:
            raise SeqlvmError(f"--replicas {self.replicas}: at least 1")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise SeqlvmError(f"--autoscale {low}:{high}: MIN from 0 to MAX, and MAX at least 1")
        if not 0 < self.port < 65536:
            raise SeqlvmError(f"--port {self.port}: a TCP port from 1 to 65535")
        if not self.poll_s > 0:
            raise SeqlvmError(f"--poll {self.poll_s}: a number of seconds above 0")
        if not self.route_prefix.startswith("/"):
            raise SeqlvmError(f"--route-prefix {self.route_prefix}: starts with /")
        if not self.max_batch_size >= 1:
            raise SeqlvmError(f"--max-batch-size {self.max_batch_size}: at least 1")

    @property
    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


def parse_autoscale(text: str) -> tuple[int, int]:
    """`MIN:MAX` as two integers."""
    low, sep, high = text.partition(":")
    try:
        if sep:
            return int(low), int(high)
    except ValueError:
        pass
    raise SeqlvmError(f"--autoscale {text}: expected MIN:MAX, two whole numbers of replicas (e.g. 1:4)")


def check_port_free(host: str, port: int) -> None:
    """One line if something on this machine already listens on `host:port`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SeqlvmError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port "
                              "or --host") from None
