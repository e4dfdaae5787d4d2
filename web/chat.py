"""The /chat namespace, written as a class-based Namespace: rooms of people talking."""

from __future__ import annotations

import time

from flask import request, session
from flask_socketio import emit, join_room, rooms

from common.contract import (
    CHAT_DEFAULT_NAME,
    CHAT_NAMESPACE,
    ChatJoinPayload,
    ChatSayPayload,
    Event,
    is_reserved_room,
)
from web.errors import BadRequest, report_error
from web.events import refuse_too_many_rooms
from web.extensions import current_presence, current_settings, socketio
from web.upstream.flask_socketio import AnsweringNamespace

MEMBERS_LISTED = 100  # user ids in a join answer; the others are counted


class ChatNamespace(AnsweringNamespace):
    """Each handler is `on_<event name>`; Flask-SocketIO dispatches by method name."""

    def unknown_event(self, *args):
        raise BadRequest(f"unknown event {request.event['message']!r}")

    def on_join(self, payload):
        request = ChatJoinPayload.model_validate(payload)
        if is_reserved_room(request.room):
            raise BadRequest(f"room {request.room!r} belongs to a connection or a user and cannot "
                             "be joined")
        refuse_too_many_rooms(request.room, namespace=self.namespace)
        session["chat_name"] = request.name
        join_room(request.room)
        self._say(request.room, "server", f"{request.name} joined {request.room}")
        # Who else is there, as of now; `presence` events tell what changes from here on. A
        # client that joins again gets the list again: its size is bounded.
        members = current_presence().room(self.namespace, request.room).summary(
            max_users=MEMBERS_LISTED)
        return {"room": request.room, "replica": current_settings().replica_id,
                "members": members}

    def on_say(self, payload):
        request = ChatSayPayload.model_validate(payload)
        # Its rooms, not its session, say where it may talk: a recovered connection gets its rooms
        # back (web/recovery/) but not the session it had on the replica it left, so it talks
        # under the default name until it joins again.
        if is_reserved_room(request.room) or request.room not in rooms(namespace=self.namespace):
            raise BadRequest(f"join room {request.room!r} before talking in it")
        self._say(request.room, session.get("chat_name", CHAT_DEFAULT_NAME), request.text)
        return {"ok": True}

    def _say(self, room: str, name: str, text: str) -> None:
        emit(Event.CHAT_MESSAGE, {
            "room": room,
            "name": name,
            "text": text,
            "replica": current_settings().replica_id,
            "sent_at": int(time.time() * 1000),
        }, to=room)


# Guard the method names against the event contract: a renamed event must rename its handler.
assert hasattr(ChatNamespace, f"on_{Event.CHAT_JOIN}")
assert hasattr(ChatNamespace, f"on_{Event.CHAT_SAY}")

socketio.on_namespace(ChatNamespace(CHAT_NAMESPACE))


@socketio.on_error(CHAT_NAMESPACE)
def on_chat_error(exc):
    return report_error(exc)
