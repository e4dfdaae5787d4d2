#!/usr/bin/env bash
# Run compose with whichever CLI is installed, for the Makefile's up/down/logs/ps/scale targets.
#
#   scripts/compose.sh ARGS...            $COMPOSE ARGS... ($COMPOSE if set, else `docker compose`
#                                         (v2), else `docker-compose` (v1 >= 1.27))
#   scripts/compose.sh up-wait ARGS...    `up -d ARGS...`, then wait until every container of the
#                                         project is healthy (compose v1 has no `up --wait`)
#
# COMPOSE_WAIT_SECONDS (default 180) bounds the wait.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then
        COMPOSE="docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE="docker-compose"
    else
        echo "error: neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed." >&2
        echo "  Install Docker with the compose plugin, or on CI-like Debian machines run:" >&2
        echo "  eval \"\$(sudo ../shared/tools/container-engine up)\"" >&2
        exit 1
    fi
fi
read -r -a compose <<<"$COMPOSE"

if [ ! -f .env ] && [ -z "${SECRET_KEY:-}" ]; then
    echo "note: no .env here; copy .env.example to .env and fill in the secrets." >&2
fi

wait_healthy() {
    local deadline=$((SECONDS + ${COMPOSE_WAIT_SECONDS:-180})) ids states unhealthy
    while :; do
        ids=$("${compose[@]}" ps -q)
        if [ -n "$ids" ]; then
            # name, then health (or the state for a container without a healthcheck)
            # shellcheck disable=SC2086
            states=$(docker inspect -f \
                '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' $ids)
            unhealthy=$(grep -v -E ' (healthy|running)$' <<<"$states" || true)
            if [ -z "$unhealthy" ]; then
                echo "all $(wc -l <<<"$states") containers healthy" >&2
                return 0
            fi
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "error: not healthy after ${COMPOSE_WAIT_SECONDS:-180}s:" >&2
            echo "${unhealthy:-no containers}" >&2
            echo "see: make logs" >&2
            return 1
        fi
        sleep 2
    done
}

if [ "${1:-}" = "up-wait" ]; then
    shift
    "${compose[@]}" up -d "$@"
    wait_healthy
else
    exec "${compose[@]}" "$@"
fi
