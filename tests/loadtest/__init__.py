"""End-to-end check of the load-test tooling (`make loadtest`) on a tiny scenario."""
