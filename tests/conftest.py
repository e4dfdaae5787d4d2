"""`pytest tests` (make test) leaves out tests/compose: it needs a container engine and runs as its
own CI step (make test-compose). Naming tests/compose on the command line still collects it."""

collect_ignore = ["compose"]
