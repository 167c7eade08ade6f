# Helpers for recipes/*/rootfs.sh. Sourced by build-all.sh; POSIX sh.
# Everything fetched is pinned (PKG=VERSION) and authenticated by apt
# (signed Release -> Packages -> .deb SHA-256).

# The .deb of PKG=VERSION in the cache for DEB_ARCH (amd64, arm64) or
# Architecture: all, if there.
cached_deb() {
    find "$DEB_CACHE" -maxdepth 1 -name "${1%%=*}_*.deb" 2>/dev/null | while read -r f; do
        v=$(dpkg-deb -f "$f" Version)
        a=$(dpkg-deb -f "$f" Architecture)
        [ "${1%%=*}=$v" = "$1" ] && { [ "$a" = "$DEB_ARCH" ] || [ "$a" = all ]; } && echo "$f"
    done | head -n1
}

# fetch_deb PKG=VERSION -> prints the path of the cached .deb for DEB_ARCH
fetch_deb() {
    spec=$1
    pkg=${spec%%=*}
    mkdir -p "$DEB_CACHE"
    # apt-get download names files pkg_version_arch.deb with ':' escaped.
    found=$(cached_deb "$spec")
    if [ -z "$found" ]; then
        # PKG:ARCH=VERSION; an Architecture: all package answers to any ARCH.
        want="$pkg:$DEB_ARCH=${spec#*=}"
        # A machine whose package lists are missing or stale: refresh once.
        (cd "$DEB_CACHE" && apt-get download -q "$want" >&2) ||
            { apt-get update -q >/dev/null 2>&1 || true; (cd "$DEB_CACHE" && apt-get download -q "$want" >&2); } || {
            echo "recipe: cannot download $want (version moved on? see recipes/README.md)" >&2
            return 1
        }
        found=$(cached_deb "$spec")
    fi
    echo "$found"
}

# extract_deb PKG=VERSION DIR
extract_deb() {
    deb=$(fetch_deb "$1")
    mkdir -p "$2"
    dpkg-deb -x "$deb" "$2"
}

# copy_needed BINARY ROOTFS LIBTREE: copy the ELF interpreter and every
# DT_NEEDED library (recursively) of BINARY from LIBTREE into ROOTFS.
copy_needed() {
    bin=$1 root=$2 libs=$3
    interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    if [ -n "$interp" ]; then
        mkdir -p "$root$(dirname "$interp")"
        cp -L "$libs$interp" "$root$interp"
    fi
    todo=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    done_libs=" "
    while :; do
        lib="" rest=""
        for x in $todo; do
            if [ -z "$lib" ]; then lib=$x; else rest="$rest $x"; fi
        done
        [ -n "$lib" ] || break
        todo=$rest
        case "$done_libs" in *" $lib "*) continue ;; esac
        done_libs="$done_libs$lib "
        src=""
        for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu; do
            [ -e "$libs$d/$lib" ] && { src="$d/$lib"; break; }
        done
        [ -n "$src" ] || { echo "recipe: $lib needed by $bin not in $libs" >&2; return 1; }
        mkdir -p "$root$(dirname "$src")"
        cp -L "$libs$src" "$root$src"
        todo="$todo $(readelf -d "$libs$src" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
    done
}

# base_files ROOTFS UID GID NAME: minimal /etc for a service user, /tmp.
base_files() {
    root=$1
    mkdir -p "$root/etc" "$root/tmp"
    chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/:/nonexistent\n%s:x:%s:%s:%s:/var/lib/%s:/nonexistent\n' "$4" "$2" "$3" "$4" "$4" >"$root/etc/passwd"
    printf 'root:x:0:\n%s:x:%s:\n' "$4" "$3" >"$root/etc/group"
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
}

# ca_bundle ROOTFS: /etc/ssl/certs/ca-certificates.crt from the pinned ca-certificates .deb.
ca_bundle() {
    t="$WORK/ca"
    rm -rf "$t"
    extract_deb "ca-certificates=$CA_CERTIFICATES_VERSION" "$t"
    mkdir -p "$1/etc/ssl/certs"
    find "$t/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat >"$1/etc/ssl/certs/ca-certificates.crt"
}
