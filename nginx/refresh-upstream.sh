#!/bin/sh
# Run by the nginx image's entrypoint (mounted into /docker-entrypoint.d/) before nginx starts.
#
# New sessions go round-robin over the `web_replicas` upstream (nginx/socketio.conf.template),
# whose servers are the addresses Docker's DNS gives for the web service, written to
# UPSTREAM_FILE. Resolving at start only would miss replicas added by `docker compose up
# --scale`; a variable in proxy_pass with a resolver sees them but picks one DNS answer per
# request, which Docker shuffles: random, not even. So this asks again every
# NGINX_UPSTREAM_REFRESH_SECONDS and reloads nginx (gracefully: open connections stay on the old
# worker until they close) only when the set of replicas changed.
set -eu

SERVICE="${NGINX_UPSTREAM_SERVICE:-web}"
PORT="${NGINX_UPSTREAM_PORT:-5000}"
EVERY="${NGINX_UPSTREAM_REFRESH_SECONDS:-2}"
UPSTREAM_FILE="${NGINX_UPSTREAM_FILE:-/etc/nginx/upstream-web.conf}"

servers() {
    getent ahostsv4 "$SERVICE" | awk '{ print $1 }' | sort -u -t. -k1,1n -k2,2n -k3,3n -k4,4n \
        | awk -v port="$PORT" '{ printf "server %s:%s;\n", $1, port }'
}

say() {
    echo "refresh-upstream: $*" >&2
}

current=""
for _ in $(seq 1 60); do  # the first replicas: compose starts nginx once web is healthy
    current="$(servers || true)"
    [ -n "$current" ] && break
    sleep 1
done
if [ -z "$current" ]; then
    say "no address for $SERVICE after 60 s; nginx starts with none"
    current="server 127.0.0.1:$PORT down;"
fi
printf '%s\n' "$current" > "$UPSTREAM_FILE"
say "$SERVICE: $(printf '%s\n' "$current" | grep -c server) replica(s)"

(
    while sleep "$EVERY"; do
        found="$(servers || true)"
        if [ -n "$found" ] && [ "$found" != "$current" ]; then
            printf '%s\n' "$found" > "$UPSTREAM_FILE.new"
            mv "$UPSTREAM_FILE.new" "$UPSTREAM_FILE"
            if nginx -t -q 2>/dev/null && nginx -s reload; then
                current="$found"
                say "$SERVICE: now $(printf '%s\n' "$found" | grep -c server) replica(s); reloaded"
            else
                say "$SERVICE: reload refused; keeping the previous list"
                printf '%s\n' "$current" > "$UPSTREAM_FILE"
            fi
        fi
    done
) &
