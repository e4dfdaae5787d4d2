"""The background-job process: consumes the job queue and pushes events to Socket.IO clients.

It never imports the web package and needs no gevent: it reaches clients on every replica by
publishing on the same RabbitMQ channel through a write-only emitter (common/broker.py).
"""
