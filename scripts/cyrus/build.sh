#!/usr/bin/env bash
# Builds Cyrus IMAP 3.6.1 with HTTP, JMAP and JMAP over WebSocket (RFC 8887) for the interop
# tests in tests/interop/, on Debian 12 (bookworm), with apt alone.
#
# Debian's own cyrus packages are built without WebSocket support, so this builds the upstream
# release tarball (cyrus-imapd_3.6.1.orig.tar.gz) from Debian's source pool. The machine's apt
# configuration is only read, never changed: a private deb-src list and private list/cache
# directories serve `apt-get source`.
#
# The result is installed under
#     ${JMAPWS_CYRUS_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/jmapws-sync/cyrus-3.6.1}
# with a stamp file (.jmapws-cyrus-stamp); tests/interop/cyrus.py finds it there. A second run
# only checks the stamp and the runtime packages, and takes seconds.
#
# Environment:
#   JMAPWS_CYRUS_PREFIX    install prefix (default above)
#   JMAPWS_CYRUS_WORKDIR   download and build directory (default: "$PREFIX.build")
#   JMAPWS_CYRUS_JOBS      make -j value (default: nproc)
#   JMAPWS_CYRUS_REBUILD=1 build again even if the stamp is there
#   JMAPWS_CYRUS_KEEP_BUILD=1 keep the unpacked build tree after a successful build
# The last line printed on success is the prefix.
set -euo pipefail

CYRUS_VERSION=3.6.1
SUITE=bookworm
COMPONENT=main
ORIG=cyrus-imapd_${CYRUS_VERSION}.orig.tar.gz
# Debian never changes an orig tarball once uploaded: a second, pinned check beside the .dsc one.
ORIG_SHA256_PINNED=32d6926123667952d5df76831de7c4ed02f389f41ac0d9c88a2427f3343a8e79

PREFIX=${JMAPWS_CYRUS_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/jmapws-sync/cyrus-$CYRUS_VERSION}
WORK=${JMAPWS_CYRUS_WORKDIR:-$PREFIX.build}
JOBS=${JMAPWS_CYRUS_JOBS:-$(nproc 2>/dev/null || echo 2)}
STAMP=$PREFIX/.jmapws-cyrus-stamp
RUNTIME_LIST=$PREFIX/share/jmapws-sync/runtime-packages
LOG=$WORK/build.log

CONFIGURE_ARGS=(
    --prefix="$PREFIX"
    --enable-http
    --enable-jmap
    --enable-xapian
    --with-wslay=yes
    --with-nghttp2=yes
    --without-brotli
    --without-zstd
    --without-perl
    --disable-unit-tests
)
# Cyrus's configure drops -O2 unless CFLAGS is given.
BUILD_CFLAGS='-g -O2'
CXX_FLAGS='-g -O2'

# What the stamp records: a change here (or in the script's recipe) means a rebuild.
RECIPE="cyrus-imapd $CYRUS_VERSION orig-sha256 $ORIG_SHA256_PINNED recipe 1; configure ${CONFIGURE_ARGS[*]} CFLAGS=$BUILD_CFLAGS; syslog shim"

BUILD_PACKAGES=(
    build-essential pkg-config perl xz-utils ca-certificates
    libical-dev libjansson-dev libxml2-dev libsqlite3-dev libicu-dev libxapian-dev
    libssl-dev libsasl2-dev zlib1g-dev uuid-dev libwslay-dev libnghttp2-dev
    libpcre3-dev comerr-dev bison flex rsync
)
# Needed at run time beside the shared libraries the binaries link to (which are recorded at
# build time in $RUNTIME_LIST): saslpasswd2, the sasldb auxprop plugin, useradd.
RUNTIME_PACKAGES=(sasl2-bin libsasl2-modules libsasl2-modules-db passwd util-linux)

log() { printf '[cyrus-build] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# apt-get install/update as root: directly, or through sudo (only asked for when needed).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "not root and no sudo: cannot run: $*"
    fi
}

export DEBIAN_FRONTEND=noninteractive

# --- apt helpers -----------------------------------------------------------------------------

# The packages among "$@" that are not installed.
missing_packages() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = installed ] || printf '%s\n' "$pkg"
    done
}

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    log "apt-get update"
    as_root apt-get update -q >&2
    APT_UPDATED=1
}

apt_install() {
    local missing pkg
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    # Without package lists (a fresh image) or with lists lacking one of them: update first.
    for pkg in "${missing[@]}"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            apt_update
            break
        fi
    done
    log "apt-get install ${missing[*]}"
    if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
        # Stale lists answer 404 for superseded versions: refresh once and retry.
        [ "$APT_UPDATED" = 1 ] && die "apt-get install failed"
        apt_update
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
            die "apt-get install failed"
    fi
}

# --- the cached case -------------------------------------------------------------------------

if [ "${JMAPWS_CYRUS_REBUILD:-0}" != 1 ] && [ -f "$STAMP" ] &&
    [ "$(cat "$STAMP")" = "$RECIPE" ]; then
    runtime=("${RUNTIME_PACKAGES[@]}")
    if [ -f "$RUNTIME_LIST" ]; then
        mapfile -t -O "${#runtime[@]}" runtime < "$RUNTIME_LIST"
    fi
    apt_install "${runtime[@]}"
    if ldd "$PREFIX/libexec/master" "$PREFIX/libexec/httpd" "$PREFIX/libexec/imapd" 2>&1 |
        grep -q 'not found'; then
        die "cached build in $PREFIX misses shared libraries; run with JMAPWS_CYRUS_REBUILD=1"
    fi
    log "cached build is up to date: $STAMP"
    printf '%s\n' "$PREFIX"
    exit 0
fi

# --- dependencies ----------------------------------------------------------------------------

apt_install "${BUILD_PACKAGES[@]}" "${RUNTIME_PACKAGES[@]}"

mkdir -p "$WORK"
: > "$LOG"

# --- the source, from Debian's source pool ---------------------------------------------------

# The archive URI of the machine's own "deb ... bookworm main" entry, and its keyring. apt
# itself reads both the deb822 (.sources) and the one-line (.list) formats here.
find_archive() {
    apt-get indextargets --no-release-info \
        --format '$(TARGET_OF)	$(REPO_URI)	$(RELEASE)	$(COMPONENT)	$(SOURCESENTRY)' \
        2>/dev/null | awk -F '\t' -v suite="$SUITE" -v comp="$COMPONENT" '
            $1 == "deb" && $3 == suite && $4 == comp { print $2 "\t" $5; found = 1; exit }
            $1 == "deb" && $3 !~ /-/ && $2 !~ /security/ && !fallback { fallback = $2 "\t" $5 }
            END { if (!found && fallback) print fallback }'
}

# The Signed-By keyring of a sources entry "FILE:N" (line N of a .list, stanza N of a .sources).
find_keyring() {
    local entry=$1 file n
    file=${entry%:*}
    n=${entry##*:}
    [ -r "$file" ] || return 0
    case $file in
    *.sources)
        awk -v n="$n" '
            BEGIN { stanza = 1; blank = 0 }
            /^[ \t]*$/ { if (!blank && seen) { stanza++; seen = 0 }; blank = 1; next }
            /^#/ { next }
            { blank = 0; seen = 1 }
            stanza == n && tolower($1) == "signed-by:" && $2 ~ /^\// { print $2; exit }' "$file"
        ;;
    *)
        sed -n "${n}p" "$file" | grep -o 'signed-by=[^] ]*' | head -n1 | cut -d= -f2 || true
        ;;
    esac
}

fetch_source() {
    local archive uri entry keyring dsc_name src_list lists opts
    archive=$(find_archive)
    if [ -n "$archive" ]; then
        uri=${archive%%	*}
        entry=${archive#*	}
        keyring=$(find_keyring "$entry")
    else
        log "no '$SUITE $COMPONENT' entry in the apt sources: using deb.debian.org"
        uri=http://deb.debian.org/debian/
        keyring=
    fi
    if [ -z "$keyring" ] && [ -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    fi
    log "source archive: $uri $SUITE $COMPONENT${keyring:+ (signed-by $keyring)}"

    src_list=$WORK/apt/sources.list
    lists=$WORK/apt/lists
    mkdir -p "$lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
    printf 'deb-src %s %s %s %s\n' "${keyring:+[signed-by=$keyring]}" "$uri" "$SUITE" \
        "$COMPONENT" > "$src_list"
    opts=(
        -o "Dir::Etc::SourceList=$src_list"
        -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$lists"
        -o "Dir::Cache=$WORK/apt/cache"
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
        -o APT::Sandbox::User="$(id -un)"
    )
    log "apt-get update (private deb-src list $src_list)"
    apt-get "${opts[@]}" update -q >> "$LOG" 2>&1 || {
        tail -n 30 "$LOG" >&2
        die "apt-get update of the private deb-src list failed"
    }

    cd "$WORK/src"
    rm -f ./*.dsc
    log "apt-get source --download-only cyrus-imapd"
    # The Debian patch tarball (and the orig's .asc) may answer 404: only the .dsc and the orig
    # tarball are needed, and their checksums are checked below.
    apt-get "${opts[@]}" source --download-only cyrus-imapd >> "$LOG" 2>&1 ||
        log "apt-get source reported errors (a missing debian.tar.xz is fine); checking files"

    if ! ls ./*.dsc >/dev/null 2>&1 || [ ! -s "$ORIG" ]; then
        log "falling back to apt-get source --print-uris and apt-helper download-file"
        local line url name size hash
        while read -r url name size hash; do
            url=${url//\'/}
            case $name in
            *.dsc | "$ORIG") ;;
            *) continue ;;
            esac
            [ -s "$name" ] && continue
            /usr/lib/apt/apt-helper download-file "$url" "$name" "$hash" >> "$LOG" 2>&1 || {
                tail -n 20 "$LOG" >&2
                die "download of $url failed"
            }
        done < <(apt-get "${opts[@]}" source --print-uris cyrus-imapd 2>>"$LOG" | grep "^'")
    fi

    dsc_name=$(ls ./*.dsc 2>/dev/null | head -n1)
    [ -n "$dsc_name" ] || die "no .dsc for cyrus-imapd was downloaded (see $LOG)"
    [ -s "$ORIG" ] || die "$ORIG was not downloaded (see $LOG)"
    verify_orig "$dsc_name"
}

verify_orig() {
    local dsc=$1 expected actual
    expected=$(awk -v f="$ORIG" '
        /^Checksums-Sha256:/ { in_sums = 1; next }
        /^[^ ]/ { in_sums = 0 }
        in_sums && $3 == f { print $1 }' "$dsc")
    [ -n "$expected" ] || die "$dsc has no Checksums-Sha256 entry for $ORIG"
    actual=$(sha256sum "$ORIG" | cut -d' ' -f1)
    if [ "$actual" != "$expected" ]; then
        die "SHA-256 MISMATCH for $ORIG: .dsc says $expected, file is $actual"
    fi
    if [ "$actual" != "$ORIG_SHA256_PINNED" ]; then
        die "SHA-256 of $ORIG is $actual, not the known $ORIG_SHA256_PINNED"
    fi
    log "sha256 of $ORIG verified against $(basename "$dsc"): $actual"
}

if [ -s "$WORK/src/$ORIG" ] &&
    [ "$(sha256sum "$WORK/src/$ORIG" | cut -d' ' -f1)" = "$ORIG_SHA256_PINNED" ] &&
    ls "$WORK/src/"*.dsc >/dev/null 2>&1; then
    log "reusing downloaded $WORK/src/$ORIG"
    (cd "$WORK/src" && verify_orig "$(ls ./*.dsc | head -n1)")
else
    (fetch_source)
fi

# --- build -----------------------------------------------------------------------------------

on_build_failure() {
    log "build failed; last lines of $LOG:"
    tail -n 60 "$LOG" >&2 || true
}
trap on_build_failure ERR

SRC=$WORK/cyrus-imapd-$CYRUS_VERSION
rm -rf "$SRC"
log "unpacking into $SRC"
tar -xzf "$WORK/src/$ORIG" -C "$WORK"

# Debian's libwslay-dev ships no libwslay.pc: a private one, found through PKG_CONFIG_PATH.
PCDIR=$WORK/pkgconfig
mkdir -p "$PCDIR"
WSLAY_VERSION=$(dpkg-query -W -f='${Version}' libwslay-dev | sed 's/^[0-9]*://; s/[-+~].*//')
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
cat > "$PCDIR/libwslay.pc" <<EOF
prefix=/usr
libdir=\${prefix}/lib/$MULTIARCH
includedir=\${prefix}/include

Name: libwslay
Description: The WebSocket library
Version: $WSLAY_VERSION
Libs: -L\${libdir} -lwslay
Cflags: -I\${includedir}
EOF
export PKG_CONFIG_PATH=$PCDIR${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}

cd "$SRC"
log "configure (log: $LOG)"
start=$(date +%s)
./configure "${CONFIGURE_ARGS[@]}" CFLAGS="$BUILD_CFLAGS" CXXFLAGS="$CXX_FLAGS" >> "$LOG" 2>&1

# Refuse a build that silently lost a feature the interop tests need.
for define in HAVE_WSLAY USE_HTTPD WITH_JMAP USE_XAPIAN; do
    grep -q "^#define $define\b" config.h || {
        grep -n -i -E 'wslay|jmap|xapian|http' config.log | tail -n 20 >&2 || true
        die "configure did not enable $define"
    }
done

log "make -j$JOBS"
make -j"$JOBS" >> "$LOG" 2>&1
rm -rf "$PREFIX"
log "make install into $PREFIX"
make install >> "$LOG" 2>&1

# Cyrus logs only through syslog(3), and a test machine runs no syslog daemon: Cyrus's own test
# suite (Cassandane) preloads this shim, which appends every syslog line to the file named by
# $CASSANDANE_SYSLOG_FNAME.
log "building the syslog shim"
gcc -shared -fPIC -O2 -o "$PREFIX/lib/jmapws-syslog.so" cassandane/utils/syslog.c -ldl >> "$LOG" 2>&1
trap - ERR

# Record the packages that provide the shared libraries of the installed binaries, so that the
# cached run can check they are still there.
mkdir -p "$(dirname "$RUNTIME_LIST")"
linked_libraries() {
    # ldd fails on the installed scripts: only the libraries it does print matter.
    find "$PREFIX" -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
        xargs -0 ldd 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u || true
}
linked_libraries |
    while read -r lib; do
        case $lib in "$PREFIX"/*) continue ;; esac
        real=$(readlink -f "$lib")
        for candidate in "$lib" "$real" "${lib#/usr}" "/usr${lib}" "${real#/usr}" "/usr${real}"; do
            if pkg=$(dpkg-query -S "$candidate" 2>/dev/null); then
                printf '%s\n' "${pkg%%:*}"
                break
            fi
        done
    done | sort -u > "$RUNTIME_LIST"
log "runtime packages: $(tr '\n' ' ' < "$RUNTIME_LIST")"

# Installed files must be readable by the unprivileged user tests/interop/cyrus.py runs Cyrus as.
chmod -R a+rX "$PREFIX"

if [ "${JMAPWS_CYRUS_KEEP_BUILD:-0}" != 1 ]; then
    rm -rf "$SRC"
fi

printf '%s\n' "$RECIPE" > "$STAMP"
log "built and installed in $(($(date +%s) - start)) s (configure + make + install)"
printf '%s\n' "$PREFIX"
