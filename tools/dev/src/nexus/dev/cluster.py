"""A NATS cluster on one machine: n nats-server processes with JetStream, joined by routes, as a
three-node production cluster is; tests use it to lose a node mid-run."""

from dataclasses import dataclass
from pathlib import Path

from nexus.dev.servers import Managed, _spawn, find_tool, free_ports, wait_port


@dataclass
class ClusterNode:
    name: str
    client_port: int
    managed: Managed

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def kill(self) -> None:
        self.managed.stop(timeout_s=0)


def node_config(name: str, client_port: int, route_port: int, routes: list[int], store: Path) -> str:
    route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
    return (
        f'server_name: "{name}"\n'
        f"listen: 127.0.0.1:{client_port}\n"
        f'jetstream {{ store_dir: "{store}" }}\n'
        f'cluster {{ name: "nexus", listen: 127.0.0.1:{route_port}, routes: [{route_urls}] }}\n'
    )


def start_nats_cluster(data_dir: Path, size: int = 3) -> list[ClusterNode]:
    ports = free_ports(2 * size)
    client_ports, route_ports = ports[:size], ports[size:]
    nodes = []
    for i in range(size):
        name = f"n{i + 1}"
        node_dir = data_dir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        conf = node_dir / "nats.conf"
        conf.write_text(node_config(name, client_ports[i], route_ports[i], route_ports, node_dir / "js"))
        proc, log = _spawn([find_tool("nats-server"), "-c", str(conf)], node_dir / "nats.log")
        nodes.append(ClusterNode(name, client_ports[i], Managed(f"nats-{name}", proc, "", log)))
    for node in nodes:
        wait_port("127.0.0.1", node.client_port, proc=node.managed.proc)
    return nodes
