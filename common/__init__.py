"""Code that both the web replicas and the worker import: settings, the event contract, the broker.

Nothing in here imports `web` or `worker`, and nothing in here needs gevent.
"""
