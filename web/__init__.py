"""The web replica: a Flask app serving Socket.IO with Flask-SocketIO in gevent mode.

  app.py             create_app(), the app factory: what a replica is made of
  extensions.py      the shared `socketio` object and the current_* accessors
  events.py, chat.py, echo.py   the Socket.IO handlers (namespaces /, /chat, /echo)
  errors.py          a handler's failure as one error answer and one log line
  api.py, routes.py, page.py    HTTP: the API, probes and metrics, the demo page
  limits.py, drain.py           policy: per-client limits, the drain on SIGTERM
  presence.py, recovery/        across replicas: who is connected, connection state recovery
  room_bindings.py   routing by room: the rooms this replica's queue is bound to
  replica_control.py, admin.py  acting on every replica's connections; the Admin UI
  upstream/          every override of a library internal, one module per library
  gunicorn_worker.py, gunicorn.conf.py, wsgi.py   how gunicorn runs a replica

(docs/design.md's Layout has a line for each; tests/unit/test_docs.py keeps both lists whole.)

This file imports nothing: gunicorn imports web.gunicorn_worker in its master process, before the
worker monkey-patches, and importing the app's modules there (Kombu among them) would leave them
with unpatched sockets and locks.
"""
