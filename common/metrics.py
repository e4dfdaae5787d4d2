"""Prometheus metrics of the web replicas and the worker, defined once.

Each process exports its own (GET /metrics on a replica, on the worker's health port); Prometheus
adds the `instance` label when it scrapes, so no replica label is needed here.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Web replicas: clients and events.
CONNECTED_CLIENTS = Gauge("socketio_connected_clients", "Socket.IO connections on this replica")
CONNECTS = Counter("socketio_connects_total", "Accepted connections", ["outcome"])
DISCONNECTS = Counter("socketio_disconnects_total", "Disconnections", ["reason"])
EVENTS_RECEIVED = Counter("socketio_events_received_total", "Events from clients", ["namespace"])
EVENTS_EMITTED = Counter("socketio_events_emitted_total",
                         "Emits to clients (one per emit, whatever the number of recipients)")
EVENTS_REFUSED = Counter("socketio_events_refused_total", "Events answered with an error",
                         ["reason"])
LIMIT_EXCEEDED = Counter("socketio_limit_exceeded_total",
                         "Clients stopped by a limit (once per offending connection; origin: "
                         "per refused handshake)", ["limit"])
PACKETS_DROPPED = Counter("socketio_packets_dropped_total", "Malformed packets dropped", ["layer"])

# Connection state recovery (web/recovery/).
RECOVERIES = Counter("socketio_recovery_connects_total",
                     "Connections that asked for recovery: recovered, or a new session",
                     ["outcome"])
RECOVERY_REPLAYED = Counter("socketio_recovery_replayed_events_total",
                            "Missed events sent to recovered connections")
RECOVERY_READ_BACK = Counter("socketio_recovery_read_back_entries_total",
                             "Log entries read back from the stream for recoveries")
RECOVERY_LOG_PASSED = Counter("socketio_recovery_log_passed_total",
                              "Log entries for none of this replica's recovering clients, kept "
                              "undecoded")

# The broker, in every process that uses it.
QUEUE_PUBLISHES = Counter("broker_publishes_total", "Messages published to the broker, by route: "
                          "the Socket.IO exchange (socketio), the records between replicas "
                          "(records), one queue (queue)", ["route"])
QUEUE_PUBLISH_FAILURES = Counter("broker_publish_failures_total",
                                 "Failed publish attempts (the message is retried)")
QUEUE_RECEIVES = Counter("broker_receives_total",
                         "Messages received by the replica's listener queue")
ROOM_BINDINGS = Gauge("broker_room_bindings",
                      "Room keys the replica's queue is bound to (web/room_bindings.py)")
BINDING_OPERATIONS = Counter("broker_binding_operations_total",
                             "Room bindings added and removed", ["operation"])
BINDING_WAITS = Histogram("broker_binding_wait_seconds",
                          "How long a room join waited for its binding",
                          buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0))
QUEUE_RECONNECTS = Counter("broker_reconnects_total", "Broker connections re-established",
                           ["connection"])
QUEUE_LOST = Counter("broker_messages_lost_total",
                     "Messages known to be lost, by where they were lost", ["where"])
QUEUE_OUTBOX = Gauge("broker_outbox_messages", "Messages waiting to be published")
EMIT_LATENCY = Histogram("broker_emit_latency_seconds", "From emit() to published on the broker",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                  5, 10, 30))
BROKER_CONNECTED = Gauge("broker_connected", "1 when the connection is up", ["connection"])
# RabbitMQ stops reading from publishing connections during a memory or disk alarm
# (connection.blocked); labels: "fanout" (the emits of this process), "jobs" (its job submissions).
BROKER_PUBLISHER_BLOCKED = Gauge("broker_publisher_blocked",
                                 "1 while RabbitMQ blocks this publisher (a resource alarm)",
                                 ["connection"])

# Job submissions (common/job_queue.py JobQueue), from every process that submits jobs.
JOB_SUBMISSIONS_REFUSED = Counter("job_submissions_refused_total",
                                  "Job submissions the broker did not take or confirm in time",
                                  ["reason"])

# The worker.
JOBS = Counter("jobs_total", "Jobs by outcome", ["job", "outcome"])
JOB_DURATION = Histogram("job_duration_seconds", "Time to run a job", ["job"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
