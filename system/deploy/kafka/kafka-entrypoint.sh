#!/bin/bash
# Entrypoint of reference-system/kafka:embedded: the workspace's embedded-broker (a Kafka-compatible
# broker) configured the way the apache/kafka image is, so the harness can use either one.
#
#   KAFKA_ADVERTISED_LISTENERS  e.g. PLAINTEXT://kafka:9092: the main listener's host:port is the
#                               address advertised to clients. The main listener is the one named by
#                               KAFKA_INTER_BROKER_LISTENER_NAME when that is advertised, else the
#                               first. Each other listener NAME://h:p with an entry NAME://addr in
#                               KAFKA_LISTENERS becomes an extra listener on addr that advertises
#                               h:p (embedded-broker --front).
#   KAFKA_LISTENERS             where each advertised listener listens (NAME://:9092 is every
#                               address; the main one defaults to 0.0.0.0:9092); CONTROLLER and
#                               other unadvertised entries are ignored, as are the controller,
#                               replication and security-protocol settings.
#   KAFKA_NODE_ID, CLUSTER_ID   the broker's node id and cluster id.
#   KAFKA_LOG_DIRS              the data directory (the first one), else /var/lib/kafka.
# The broker's own EMBEDDED_BROKER_* variables (see `embedded-broker --help`) win over these, e.g.
# EMBEDDED_BROKER_ADVERTISED_LISTENER=host:port.
#
# Once the listener accepts connections this prints, on stdout, one line containing
# `Kafka Server started` (as apache/kafka does), for wait-for-log strategies: a published port
# accepts TCP connections (docker's proxy) before the broker listens, so it is no readiness signal.
set -euo pipefail

log() { printf '%s [kafka-entrypoint] %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$*" >&2; }

# Arguments starting with '-' go to embedded-broker; any other command runs as is (e.g. bash).
if [ $# -gt 0 ] && [ "${1:0:1}" != - ]; then
  exec "$@"
fi

# NAME://host:port -> host:port (an empty host, NAME://:9092, listens on every address).
listen_addr() {
  local a=${1#*://}
  [ "${a:0:1}" != : ] || a="0.0.0.0$a"
  printf '%s' "$a"
}
# NAME://host:port -> host:port (an empty host advertises this container's hostname).
advertised_addr() {
  local a=${1#*://}
  [ "${a:0:1}" != : ] || a="$(hostname)$a"
  printf '%s' "$a"
}
# NAME LIST: the listen address of listener NAME in the comma-separated LIST; fails if absent.
find_listener() {
  local name=$1 l entries
  IFS=, read -ra entries <<<"${2// /}"
  for l in "${entries[@]}"; do
    if [[ $l == *://* ]] && [ "${l%%://*}" = "$name" ]; then
      listen_addr "$l"
      return 0
    fi
  done
  return 1
}

listen=${EMBEDDED_BROKER_LISTEN:-}
advertised=${EMBEDDED_BROKER_ADVERTISED_LISTENER:-}
fronts=${EMBEDDED_BROKER_FRONTS:-}
if [ -n "${KAFKA_ADVERTISED_LISTENERS:-}" ]; then
  IFS=, read -ra advs <<<"${KAFKA_ADVERTISED_LISTENERS// /}"
  main=0
  for i in "${!advs[@]}"; do
    if [ -n "${KAFKA_INTER_BROKER_LISTENER_NAME:-}" ] && [ "${advs[$i]%%://*}" = "$KAFKA_INTER_BROKER_LISTENER_NAME" ]; then
      main=$i
    fi
  done
  first=${advs[$main]}
  [ -n "$advertised" ] || advertised=$(advertised_addr "$first")
  if [ -z "$listen" ] && [[ $first == *://* ]]; then
    listen=$(find_listener "${first%%://*}" "${KAFKA_LISTENERS:-}") || listen=
  fi
  if [ -z "${EMBEDDED_BROKER_FRONTS:-}" ]; then
    for i in "${!advs[@]}"; do
      [ "$i" != "$main" ] || continue
      extra=${advs[$i]}
      name=${extra%%://*}
      if front_listen=$(find_listener "$name" "${KAFKA_LISTENERS:-}"); then
        fronts+="${fronts:+,}$(advertised_addr "$extra")@$front_listen"
      else
        log "advertised listener $name has no KAFKA_LISTENERS entry: ignored"
      fi
    done
  fi
fi
export EMBEDDED_BROKER_LISTEN=${listen:-0.0.0.0:9092}
[ -z "$advertised" ] || export EMBEDDED_BROKER_ADVERTISED_LISTENER=$advertised
[ -z "$fronts" ] || export EMBEDDED_BROKER_FRONTS=$fronts
log_dir=${KAFKA_LOG_DIRS:-}
export EMBEDDED_BROKER_DATA_DIR=${EMBEDDED_BROKER_DATA_DIR:-${log_dir%%,*}}
[ -n "$EMBEDDED_BROKER_DATA_DIR" ] || EMBEDDED_BROKER_DATA_DIR=/var/lib/kafka
[ -z "${KAFKA_NODE_ID:-}" ] || export EMBEDDED_BROKER_NODE_ID=${EMBEDDED_BROKER_NODE_ID:-$KAFKA_NODE_ID}
[ -z "${CLUSTER_ID:-}" ] || export EMBEDDED_BROKER_CLUSTER_ID=${EMBEDDED_BROKER_CLUSTER_ID:-$CLUSTER_ID}
ready=${EMBEDDED_BROKER_READY_FILE:-/run/embedded-broker.ready}
export EMBEDDED_BROKER_READY_FILE=$ready
mkdir -p "$EMBEDDED_BROKER_DATA_DIR" "$(dirname "$ready")"
rm -f "$ready"
log "listen ${EMBEDDED_BROKER_LISTEN}, advertised ${EMBEDDED_BROKER_ADVERTISED_LISTENER:-(the listen address, 0.0.0.0 as loopback)}${fronts:+, fronts $fronts}, data ${EMBEDDED_BROKER_DATA_DIR}"

# The broker runs as a child so that this script can announce readiness; SIGTERM and SIGINT are
# passed on to it (tini, PID 1, passes them here).
pid= stopping=
trap 'stopping=1; [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || :' TERM INT
embedded-broker "$@" &
pid=$!
[ -z "$stopping" ] || kill -TERM "$pid" 2>/dev/null || :
while [ ! -s "$ready" ] && kill -0 "$pid" 2>/dev/null; do
  sleep 0.1
done
if [ -s "$ready" ]; then
  echo "[EmbeddedBroker nodeId=${EMBEDDED_BROKER_NODE_ID:-111}] Kafka Server started (listening on $EMBEDDED_BROKER_LISTEN, advertised as ${EMBEDDED_BROKER_ADVERTISED_LISTENER:-the listen address}${fronts:+; fronts $fronts})"
fi
status=0
while :; do
  wait "$pid" && status=0 || status=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
