#!/usr/bin/env bash
# Replace the web replicas of a running compose stack one at a time, with nothing refused:
#
#   deploy/compose/rolling-update.sh            # after `docker compose build` (a new image)
#
# For each replica that is running now: start one more from the current image and wait until it
# is healthy (its /readyz answers 200: it serves), then stop the old one, which drains (readiness
# 503, its clients moved to the others over DRAIN_SECONDS, then gunicorn's graceful shutdown;
# stop_grace_period covers both), and remove it. nginx sees the new set within 2 s. The number of
# replicas is the same at the end. Uses $COMPOSE like scripts/compose.sh, and the usual compose
# variables (COMPOSE_FILE, COMPOSE_PROJECT_NAME) to find the stack.
#
# ROLL_WAIT_SECONDS (default 120) bounds the wait for each new replica.
set -euo pipefail
cd "$(dirname "$0")/../.."
read -r -a compose <<<"${COMPOSE:-docker compose}"

healthy() {  # how many of the given containers are healthy
    [ "$#" -eq 0 ] && { echo 0; return; }
    docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$@" | grep -c '^healthy$' || true
}

mapfile -t old < <("${compose[@]}" ps -q web)
count=${#old[@]}
[ "$count" -gt 0 ] || { echo "rolling-update: no web replica is running" >&2; exit 1; }
echo "rolling-update: $count replicas, one at a time" >&2
for container in "${old[@]}"; do
    "${compose[@]}" up -d --no-deps --no-recreate --no-build --scale "web=$((count + 1))" web >&2
    deadline=$((SECONDS + ${ROLL_WAIT_SECONDS:-120}))
    until mapfile -t now < <("${compose[@]}" ps -q web) && [ "$(healthy "${now[@]}")" -ge "$((count + 1))" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "rolling-update: the new replica is not healthy after ${ROLL_WAIT_SECONDS:-120}s; stopped (old replicas untouched)" >&2
            exit 1
        fi
        sleep 1
    done
    name=$(docker inspect -f '{{.Name}}' "$container")
    echo "rolling-update: new replica healthy; draining ${name#/}" >&2
    docker stop "$container" >/dev/null   # waits for the drain; the grace period is the container's
    docker rm "$container" >/dev/null
done
echo "rolling-update: done" >&2
