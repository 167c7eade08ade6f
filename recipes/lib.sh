# Helpers for recipes/*/rootfs.sh. Sourced by build-all.sh; POSIX sh.
# Everything fetched is pinned (PKG=VERSION) and authenticated by apt
# (signed Release -> Packages -> .deb SHA-256).

# fetch_deb PKG=VERSION -> prints the path of the cached .deb
fetch_deb() {
    spec=$1
    pkg=${spec%%=*}
    dir="$DEB_CACHE"
    mkdir -p "$dir"
    # apt-get download names files pkg_version_arch.deb with ':' escaped.
    found=$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" 2>/dev/null | while read -r f; do
        v=$(dpkg-deb -f "$f" Version)
        [ "$pkg=$v" = "$spec" ] && echo "$f"
    done | head -n1)
    if [ -z "$found" ]; then
        # A machine whose package lists are missing or stale: refresh once.
        (cd "$dir" && apt-get download -q "$spec" >&2) ||
            { apt-get update -q >/dev/null 2>&1 || true; (cd "$dir" && apt-get download -q "$spec" >&2); } || {
            echo "recipe: cannot download $spec (version moved on? see recipes/README.md)" >&2
            return 1
        }
        found=$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | while read -r f; do
            v=$(dpkg-deb -f "$f" Version)
            [ "$pkg=$v" = "$spec" ] && echo "$f"
        done | head -n1)
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
