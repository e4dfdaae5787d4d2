"""Wait, before a process of the app image starts, until every broker node accepts connections:
`python docker/wait_for_brokers.py --timeout SECONDS HOST:PORT...`, then the process (`&&`).

Why (deploy/swarm/stack.yml; compose has `depends_on: service_healthy` for the same reason):
RabbitMQ fixes the members of what it replicates when it is first used. The stream coordinator
(the Raft cluster that knows the recovery streams) starts on the nodes running at the first stream
declare, and the quorum queues get members on the nodes running when they are declared. A Swarm
deploy starts everything at once, so the web replicas declared the recovery streams while
rabbitmq-1 was the only node. On RabbitMQ 3.10 a node that joins later and has no coordinator
member starts a second coordinator; the two clash, the coordinator forgets the streams, and every
publish to the fan-out exchange through that node (now bound to a stream it cannot find) crashes
its channel (`stream_not_found`, INTERNAL_ERROR): the broadcast is lost for every replica.

A node accepts AMQP connections only once it has joined the cluster. After the timeout the process
starts anyway (a node may be down for good); it says which nodes did not answer. Exit status 0
then too, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def accepts(address: str, timeout: float = 2.0) -> bool:
    """Whether HOST:PORT accepts a TCP connection now (a name that does not resolve: no)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(addresses: list[str], timeout: float, interval: float = 1.0) -> list[str]:
    """The addresses that still did not accept a connection when `timeout` seconds had passed."""
    deadline = time.monotonic() + timeout
    waiting = list(addresses)
    while True:
        waiting = [address for address in waiting if not accepts(address)]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(interval)


def address(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wait_for_brokers.py", description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait at most")
    parser.add_argument("addresses", nargs="+", type=address, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"waiting up to {args.timeout:.0f}s for the broker nodes {', '.join(args.addresses)}",
          file=sys.stderr, flush=True)
    missing = wait_for(args.addresses, args.timeout)
    took = time.monotonic() - started
    if missing:
        print(f"broker nodes {', '.join(missing)} did not answer within {took:.0f}s: starting "
              "anyway; what is first declared now gets no member on them", file=sys.stderr)
    else:
        print(f"every broker node answered after {took:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
