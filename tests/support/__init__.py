"""Everything the tests share that is not a fixture: the stack starter, real and test clients,
the fault proxy, fakes of the broker pieces, one `wait_until` and one metrics reader.

Fixtures live in the conftest.py files and only declare; the code they run lives here.

- `app`: the real app in threading mode and Flask-SocketIO's test client (unit tier)
- `fakes`: a fake broker connection, producer and message, a fake emitter (unit tier)
- `stack`: the native stack on free loopback ports (integration and browser tiers)
- `clients`: real python-socketio clients that record what they receive
- `faultproxy`: a TCP proxy that cuts or freezes connections
- `compose`: docker-compose.yml driven through the compose CLI (compose tier)
- `browser`: a Chromium tab of the demo page (browser tier)
- `waiting`: `wait_until`
- `metrics`: `read_metric`, one sample of a process's Prometheus /metrics
"""
