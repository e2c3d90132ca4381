#!/bin/bash
# Entrypoint of reference-system/postgres: Debian's PostgreSQL behind the interface of the official
# postgres image, so the harness can use either one.
#
# Environment (as the official image): POSTGRES_USER (default postgres), POSTGRES_PASSWORD,
# POSTGRES_DB (default: the user), each also as *_FILE; PGDATA (default
# /var/lib/postgresql/data); POSTGRES_HOST_AUTH_METHOD (default scram-sha-256; `trust` allows an
# empty password); POSTGRES_INITDB_ARGS. On first start (no PG_VERSION in PGDATA) it runs initdb,
# creates POSTGRES_DB and runs /docker-entrypoint-initdb.d/*.sql, *.sql.gz and *.sh against a
# temporary server listening on no TCP address, whose log goes to a file. The log then reads as
# the official image's: initdb's output ("The files belonging to this database system ..."),
# "PostgreSQL init process complete; ready for start up.", and `database system is ready to accept
# connections` (on stderr, by postgres), printed only by the final server, once it accepts
# connections on 0.0.0.0:5432 (and on ::, where the container has IPv6).
#
# Postgres runs as the postgres user, as a child of this script: SIGTERM and SIGINT both become a
# fast shutdown (SIGINT), so `docker stop` ends in about a second even with clients connected,
# where a SIGTERM sent straight to postgres would wait for every client to disconnect.
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }

# VAR [DEFAULT]: VAR's value, else the content of the file named by VAR_FILE, else DEFAULT.
file_env() {
  local var=$1 file_var="$1_FILE" default=${2:-} value
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    log "error: both $var and $file_var are set (they are exclusive)"
    exit 1
  fi
  value=$default
  if [ -n "${!var:-}" ]; then
    value=${!var}
  elif [ -n "${!file_var:-}" ]; then
    value=$(<"${!file_var}")
  fi
  export "$var=$value"
  unset "$file_var"
}

# `docker run IMAGE -c x=y` means `postgres -c x=y`; any other command runs as is (e.g. bash).
if [ $# -eq 0 ] || [ "${1:0:1}" = - ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

export PGDATA=${PGDATA:-/var/lib/postgresql/data}

if [ "$(id -u)" = 0 ]; then
  # A volume mounted on PGDATA belongs to root: hand it to postgres, then run as postgres.
  mkdir -p "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chown postgres:postgres /var/run/postgresql
  chmod 3777 /var/run/postgresql
  export HOME=/var/lib/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

file_env POSTGRES_USER postgres
file_env POSTGRES_PASSWORD
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

psql_init() {
  psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" "$@"
}

initialise() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
    log "error: the database is uninitialised and POSTGRES_PASSWORD is not set"
    log "       (set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust to allow connections without one)"
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"

  local pwfile=() tmp
  tmp=$(mktemp -d)
  if [ -n "$POSTGRES_PASSWORD" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" >"$tmp/pw"
    pwfile=(--pwfile="$tmp/pw")
  fi
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of arguments, as in the official image
  initdb --username="$POSTGRES_USER" "${pwfile[@]}" --auth-local=trust --auth-host="$auth" \
    --encoding=UTF8 --locale=C.UTF-8 --no-sync $POSTGRES_INITDB_ARGS
  rm -f "$tmp/pw"
  {
    printf '\n# reference-system: remote connections with a password (or POSTGRES_HOST_AUTH_METHOD)\n'
    printf 'host all all all %s\n' "$auth"
  } >>"$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

  # A temporary server on the Unix socket only, logging to a file: nothing outside the
  # container can connect, and no "ready to accept connections" line reaches the container log.
  if ! pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c fsync=off" -l "$tmp/init-server.log" \
    -w -t 60 start >/dev/null; then
    cat "$tmp/init-server.log" >&2
    exit 1
  fi
  if [ "$POSTGRES_DB" != postgres ]; then
    psql_init --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
  fi
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        log "running $f"
        if [ -x "$f" ]; then "$f"; else . "$f"; fi
        ;;
      *.sql)
        log "running $f"
        psql_init --dbname "$POSTGRES_DB" -f "$f" >/dev/null
        ;;
      *.sql.gz)
        log "running $f"
        gunzip -c "$f" | psql_init --dbname "$POSTGRES_DB" >/dev/null
        ;;
      *) [ -e "$f" ] && log "ignoring $f" ;;
    esac
  done
  if ! pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null; then
    cat "$tmp/init-server.log" >&2
    exit 1
  fi
  rm -rf "$tmp"
  log "initialised PGDATA=$PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
  # As the official image says it; wait strategies look for the ready line after this one.
  printf '\nPostgreSQL init process complete; ready for start up.\n\n'
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initialise
fi
unset POSTGRES_PASSWORD

pid= stopping=
trap 'stopping=1; [ -z "$pid" ] || kill -INT "$pid" 2>/dev/null || :' INT TERM
"$@" &
pid=$!
[ -z "$stopping" ] || kill -INT "$pid" 2>/dev/null || :
status=0
while :; do
  wait "$pid" && status=0 || status=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
