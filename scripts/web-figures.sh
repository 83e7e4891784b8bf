#!/usr/bin/env bash
# Figures for the web UI: the weight of each page (HTML + CSS + JS) and server time per page at
# p50/p99 under concurrent load, with ApacheBench (Debian's apache2-utils) on loopback against
# `tidegate demo`. Usage: scripts/web-figures.sh [REQUESTS_PER_PAGE] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-1000}"
concurrency="${2:-8}"
command -v ab >/dev/null || { echo "needs ab: apt-get install apache2-utils" >&2; exit 2; }

cargo build --release -q -p tidegate
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
./target/release/tidegate demo --listen "127.0.0.1:$port" --for-seconds 600 >/dev/null &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

# A session for a user: the cookie's value.
session() {
  curl -s -o /dev/null -D - -d "user=$1" -d next=/ "$base/login" \
    | sed -n 's/^[Ss]et-[Cc]ookie: tidegate_session=\([^;]*\).*/\1/p'
}
dave=$(session dave@example.com)
alice=$(session alice@example.com)
csrf() { curl -s -b "tidegate_session=$1" "$base/" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -1; }
# Something to show: one pending request of dave's.
location=$(curl -s -o /dev/null -w '%{redirect_url}' -b "tidegate_session=$dave" \
  -d "csrf=$(csrf "$dave")" -d entitlement=prod-ssh -d duration=1h -d reason=INC-1 "$base/request")
request_path=${location#"$base"}

css=$(curl -s "$base/static/app.css" | wc -c)
js=$(curl -s "$base/static/app.js" | wc -c)
printf '%-22s %8s %8s %8s %8s %8s\n' page html_b total_b p50_ms p99_ms req_s
for entry in "/:$dave" "/request:$dave" "/approvals:$alice" "$request_path:$dave" "/admin:$alice"; do
  path=${entry%%:*}
  cookie=${entry#*:}
  html=$(curl -s -b "tidegate_session=$cookie" "$base$path" | wc -c)
  out=$(ab -q -n "$requests" -c "$concurrency" -C "tidegate_session=$cookie" "$base$path" 2>&1)
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  rps=$(echo "$out" | awk '/Requests per second/{print $4}')
  failed=$(echo "$out" | awk '/Failed requests/{print $3}')
  [ "$failed" = "0" ] || echo "warning: $failed failed requests on $path" >&2
  printf '%-22s %8s %8s %8s %8s %8s\n' "$path" "$html" "$((html + css + js))" "$p50" "$p99" "$rps"
done
