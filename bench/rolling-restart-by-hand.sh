#!/usr/bin/env bash
# The careful hand-run baseline for bench/rolling-restart.ts: a rolling restart of the pg-ha DB servers
# the way an operator would do it with curl — each replica stopped and started through its dispatcher
# (start waits until it is ready: PostgreSQL answers and its own WAL receiver streams), then a Patroni
# switchover to the first restarted replica, then the old leader stopped and started.
#
# Input (stdin), one DB server a line, replicas first and the leader LAST:
#   ID DISPATCHER_URL CA_FILE PATRONI_REST_URL
# Env: AUTH=user:password for the dispatchers; PATRONI_CA, PATRONI_CERT, PATRONI_KEY (cluster CA and a
# client certificate of it: Patroni's REST API requires one) and PATRONI_AUTH=user:password (unsafe methods).
set -euo pipefail
mapfile -t LINES
n=${#LINES[@]}
call() { # METHOD URL CA [DATA]
  curl -sS --fail-with-body --cacert "$3" -u "$AUTH" -X "$1" -H 'content-type: application/json' ${4:+-d "$4"} "$2" >/dev/null
}
restart_one() { # ID URL CA
  call POST "$2/v1/node/processes/$1/stop" "$3" '{}'
  call POST "$2/v1/node/processes/$1/start" "$3" '{"readyTimeoutMs":120000}'
}
first=""
for ((i = 0; i < n - 1; i++)); do
  read -r id url ca rest <<<"${LINES[$i]}"
  restart_one "$id" "$url" "$ca"
  if [ -z "$first" ]; then first=$id; fi
done
read -r leader lurl lca lrest <<<"${LINES[$((n - 1))]}"
patroni() { curl -sS --cacert "$PATRONI_CA" --cert "$PATRONI_CERT" --key "$PATRONI_KEY" "$@"; }
patroni --fail-with-body -u "$PATRONI_AUTH" -X POST -H 'content-type: application/json' -d "{\"leader\":\"$leader\",\"candidate\":\"$first\"}" "$lrest/switchover" >/dev/null
# Wait until the candidate answers as primary.
crest=""
for l in "${LINES[@]}"; do
  read -r id _ _ r <<<"$l"
  if [ "$id" = "$first" ]; then crest=$r; fi
done
for _ in $(seq 1 300); do
  if [ "$(patroni -s -o /dev/null -w '%{http_code}' -X OPTIONS "$crest/primary")" = 200 ]; then break; fi
  sleep 0.1
done
restart_one "$leader" "$lurl" "$lca"
