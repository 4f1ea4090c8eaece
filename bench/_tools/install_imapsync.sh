#!/usr/bin/env bash
# Install imapsync for the copy benchmark (bench/copy_bench.py), outside the repo.
#
# imapsync is NOT vendored: its source must come from a local git mirror of
# github.com/imapsync/imapsync (e.g. one brought by a session's `fetch` tool, default
# /work/.mirror/imapsync+imapsync/repo) or from an existing checkout; pass it as $1 or
# IMAPSYNC_SRC. The script extracts the `imapsync` script into $IMAPSYNC_DIR
# (default /tmp/imapsync), installs the Perl modules it needs from Debian packages, and runs
# `imapsync --version` as a smoke check. Prints the path of the runnable script last.
set -euo pipefail
SRC="${1:-${IMAPSYNC_SRC:-/work/.mirror/imapsync+imapsync/repo}}"
DIR="${IMAPSYNC_DIR:-/tmp/imapsync}"
mkdir -p "$DIR"
if [ -d "$SRC/objects" ] || [ -f "$SRC/HEAD" ] && [ ! -f "$SRC/imapsync" ]; then
  git --git-dir="$SRC" show HEAD:imapsync > "$DIR/imapsync"          # bare mirror
  git --git-dir="$SRC" rev-parse HEAD > "$DIR/COMMIT"
elif [ -f "$SRC/imapsync" ]; then
  cp "$SRC/imapsync" "$DIR/imapsync"                                   # a checkout
else
  echo "no imapsync source at $SRC" >&2; exit 2
fi
chmod +x "$DIR/imapsync"
PKGS="libmail-imapclient-perl libio-socket-ssl-perl libterm-readkey-perl libdigest-hmac-perl
 libfile-copy-recursive-perl libio-tee-perl libunicode-string-perl libreadonly-perl
 libsys-meminfo-perl libregexp-common-perl libencode-imaputf7-perl libdata-uniqid-perl
 libjson-webtoken-perl libnet-server-perl libauthen-ntlm-perl libcrypt-openssl-rsa-perl
 libdist-checkconflicts-perl libfile-tail-perl libhtml-parser-perl libio-socket-inet6-perl
 libjson-perl libmodule-scandeps-perl libnet-dns-perl libparse-recdescent-perl
 libproc-processtable-perl libwww-perl libcgi-pm-perl libnet-ssleay-perl"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || { echo "need root to apt-get install:$missing" >&2; exit 3; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
"$DIR/imapsync" --version >/dev/null
echo "$DIR/imapsync"
