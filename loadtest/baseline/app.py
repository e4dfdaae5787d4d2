"""The baseline: Flask-SocketIO's documented scaling recipe, nothing more.

`SocketIO(app, message_queue=AMQP_URL)` (the stock KombuManager), one gevent-websocket gunicorn
worker per replica, nginx with `ip_hash` in front (nginx.conf.template). Its handlers are those of
Flask-SocketIO's example app that the load test's scenarios use; event names come from the
project's contract so both stacks speak the same protocol. The only addition is /readyz, for the
runner to know the replica is up. Run by loadtest/baseline/stack.py, never in production.
"""

import os

from flask import Flask, request
from flask_socketio import SocketIO, emit, join_room, rooms

from common.contract import Event

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]
socketio = SocketIO(app, message_queue=os.environ["AMQP_URL"], async_mode="gevent")
REPLICA_ID = os.environ.get("REPLICA_ID", f"baseline-{os.getpid()}")


@app.route("/readyz")
def readyz():
    return "ok"


@socketio.on("connect")
def on_connect():
    emit(Event.MY_RESPONSE, {"data": "Connected", "count": 0})


@socketio.on(Event.MY_BROADCAST_EVENT)
def on_broadcast(message):
    emit(Event.MY_RESPONSE, {"data": message["data"], "count": 0}, broadcast=True)


@socketio.on(Event.JOIN)
def on_join(message):
    join_room(message["room"])
    emit(Event.MY_RESPONSE, {"data": "In rooms: " + ", ".join(rooms()), "count": 0})


@socketio.on(Event.MY_ROOM_EVENT)
def on_room_event(message):
    emit(Event.MY_RESPONSE, {"data": message["data"], "count": 0}, to=message["room"])


@socketio.on(Event.MY_PING)
def on_ping(payload=None):
    return payload


@socketio.on(Event.SERVER_INFO)
def on_server_info():
    return {"replica": REPLICA_ID, "transport": socketio.server.transport(request.sid),
            "pid": os.getpid()}
