"""Load tests for the stack: Locust drives real Socket.IO clients through nginx (make loadtest)."""
