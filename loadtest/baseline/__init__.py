"""The baseline: the plain Flask-SocketIO documentation recipe, for `make loadtest-compare`."""
