#!/bin/sh
# First start: initdb into $PGDATA (superuser password from /run/secrets/pg-superuser), and with
# /run/secrets/pg-app the application's role mks_user (that password) and its database mks_db. Every start:
# exec the server as PID 1, as the postgres account, logging to stderr (the container's log).
set -eu
# A command of its own (the harness's: the sandbox's cluster, as its service account) runs as given.
case "${1:-}" in
    ""|-*) ;;
    *) exec "$@" ;;
esac
bin=/usr/lib/postgresql/15/bin
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
install -d -o postgres -g postgres -m 2775 /run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    secret=/run/secrets/pg-superuser
    if [ ! -r "$secret" ]; then
        echo "mks-postgres: no superuser password at $secret; refusing to make a cluster without one" >&2
        exit 1
    fi
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    pwfile=$(mktemp)
    cp "$secret" "$pwfile" && chown postgres "$pwfile" && chmod 0600 "$pwfile"
    as_postgres "$bin/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth=scram-sha-256 \
        -E UTF8 --no-locale --no-sync >/dev/null
    rm -f "$pwfile"
    cat > "$PGDATA/pg_hba.conf" <<'HBA'
# mks-drill container: passwords always
local   all   all                 scram-sha-256
host    all   all   0.0.0.0/0     scram-sha-256
host    all   all   ::/0          scram-sha-256
host    replication   all   127.0.0.1/32   scram-sha-256
host    replication   all   ::1/128        scram-sha-256
HBA
    chown postgres:postgres "$PGDATA/pg_hba.conf"
    app=/run/secrets/pg-app
    if [ -r "$app" ]; then
        # the application's role and database, on a server that listens on no TCP port meanwhile
        as_postgres "$bin/pg_ctl" -D "$PGDATA" -w -s -o "-c listen_addresses='' \
            -c unix_socket_directories=/run/postgresql" start
        umask 077
        cp "$app" /run/postgresql/.app
        printf '*:*:*:postgres:%s\n' "$(head -n 1 "$secret")" > /run/postgresql/.pgpass
        chown postgres /run/postgresql/.app /run/postgresql/.pgpass
        PGPASSFILE=/run/postgresql/.pgpass as_postgres "$bin/psql" -X -q -v ON_ERROR_STOP=1 \
            -h /run/postgresql -U postgres -d postgres <<'SQL'
\set app_password `cat /run/postgresql/.app`
CREATE ROLE mks_user LOGIN PASSWORD :'app_password';
CREATE DATABASE mks_db OWNER mks_user;
\connect mks_db
CREATE EXTENSION IF NOT EXISTS amcheck;
SQL
        rm -f /run/postgresql/.app /run/postgresql/.pgpass
        as_postgres "$bin/pg_ctl" -D "$PGDATA" -w -s -m fast stop
        echo "mks-postgres: role mks_user and database mks_db made" >&2
    fi
    echo "mks-postgres: cluster made in $PGDATA" >&2
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$PGDATA" \
    -c listen_addresses="$PG_LISTEN" -c port="$PGPORT" -c unix_socket_directories=/run/postgresql \
    -c dynamic_shared_memory_type=mmap -c shared_buffers=64MB -c max_connections=60 \
    -c timezone=UTC -c log_timezone=UTC -c "log_line_prefix=%m [%p] %q%u@%d " "$@"
