"""A NATS cluster on one machine: n nats-server processes with JetStream, joined by routes, as a
three-node production cluster is; tests use it to lose a node mid-run."""

from dataclasses import dataclass
from pathlib import Path

from nexus.dev.servers import Managed, _spawn, find_tool, free_ports, remember_auth, wait_port


@dataclass
class ClusterNode:
    name: str
    client_port: int
    conf: Path
    managed: Managed | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def kill(self) -> None:
        if self.managed is not None:
            self.managed.stop(timeout_s=0)

    def start(self) -> Managed:
        """nats-server for this node, its log appended to `nats.log` beside its config."""
        proc, log = _spawn([find_tool("nats-server"), "-c", str(self.conf)], self.conf.with_name("nats.log"))
        self.managed = Managed(f"nats-{self.name}", proc, "", log)
        return self.managed

    def restart(self) -> None:
        """The node again, on its port and with its store, as a node back from a crash."""
        wait_port("127.0.0.1", self.client_port, proc=self.start().proc)


def node_config(name: str, client_port: int, route_port: int, routes: list[int], store: Path) -> str:
    route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
    return (
        f'server_name: "{name}"\n'
        f"listen: 127.0.0.1:{client_port}\n"
        f'jetstream {{ store_dir: "{store}" }}\n'
        f'cluster {{ name: "nexus", listen: 127.0.0.1:{route_port}, routes: [{route_urls}] }}\n'
    )


def start_nats_cluster(data_dir: Path, size: int = 3, auth: Path | None = None) -> list[ClusterNode]:
    """`size` joined nodes; with `auth` (a servers.nats_auth() directory) each runs with that authorization."""
    ports = free_ports(2 * size)
    client_ports, route_ports = ports[:size], ports[size:]
    nodes: list[ClusterNode] = []
    started: list[Managed] = []
    for i in range(size):
        name = f"n{i + 1}"
        node_dir = data_dir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        conf = node_dir / "nats.conf"
        auth_conf = (auth / "nats.conf").read_text() if auth else ""
        conf.write_text(node_config(name, client_ports[i], route_ports[i], route_ports, node_dir / "js") + auth_conf)
        node = ClusterNode(name, client_ports[i], conf)
        started.append(node.start())
        nodes.append(node)
        remember_auth(node.url, auth)
    for node, managed in zip(nodes, started, strict=True):
        wait_port("127.0.0.1", node.client_port, proc=managed.proc)
    return nodes
