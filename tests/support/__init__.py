"""Everything the tests share that is not a fixture: the stack starter, real and test clients,
the fault proxy, fakes of the broker pieces, one `wait_until` and one metrics reader.

Fixtures live in the conftest.py files and only declare; the code they run lives here.

- `app.py`: the real app in threading mode and Flask-SocketIO's test client (unit tier)
- `fakes.py`: a fake broker connection, producer and message, a fake emitter (unit tier)
- `docs.py`: what README.md and docs/ name, checked against the tree (unit tier)
- `recipes.py`: the recipes of docs/events.md, applied to a copy of the tree (unit tier)
- `stack.py`: the native stack on free loopback ports (integration and browser tiers)
- `clients.py`: real python-socketio clients that record what they receive
- `wsclients.py`: thousands of lean raw-WebSocket Socket.IO clients from one process
- `hostile.py`: the soak's hostile clients
- `faultproxy.py`: a TCP proxy that cuts or freezes connections
- `memory.py`: a replica's RSS, from /proc
- `compose.py`: docker-compose.yml driven through the compose CLI (compose, cluster, swarm tiers)
- `engine_tiers.py`: the tiers that need a container engine run only when named
- `rolling.py`: clients that live through a rolling update, and what they lost
- `browser.py`: a Chromium tab of the demo page (browser tier)
- `node.py`: Node.js scripts of the official client run from a test (`node_or_fail`)
- `waiting.py`: `wait_until`
- `metrics.py`: `read_metric`, one sample of a process's Prometheus /metrics
"""
