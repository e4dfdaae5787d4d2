"""Load tests for the stack: Locust driving real Socket.IO clients through nginx (`make loadtest`)."""
