# Helpers for recipes/*/rootfs.sh. Sourced by build-all.sh; POSIX sh.
# Everything fetched is pinned (PKG=VERSION) and authenticated by apt
# (signed Release -> Packages -> .deb SHA-256).

# The .deb of PKG=VERSION in the cache for DEB_ARCH (amd64, arm64, armhf) or
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

# The DT_NEEDED entries of an ELF file.
needed() {
    readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# copy_libs ROOTFS LIBTREE LIB...: copy the libraries named LIB (file names,
# e.g. libc.so.6) and, recursively, every library they need from LIBTREE
# into ROOTFS, at the same path.
copy_libs() {
    root=$1 libs=$2
    shift 2
    todo="$*"
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
        for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu \
            /lib/arm-linux-gnueabihf /usr/lib/arm-linux-gnueabihf; do
            [ -e "$libs$d/$lib" ] && { src="$d/$lib"; break; }
        done
        [ -n "$src" ] || { echo "recipe: $lib (needed by ${NEEDED_BY:-a library}) not in $libs" >&2; return 1; }
        mkdir -p "$root$(dirname "$src")"
        cp -L "$libs$src" "$root$src"
        todo="$todo $(needed "$libs$src")"
    done
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
    NEEDED_BY=$bin copy_libs "$root" "$libs" $(needed "$bin")
}

# copy_needed_tree ROOTFS DIR LIBTREE: copy_needed for every ELF shared
# object under ROOTFS/DIR (the extension modules of wheels): what they
# need from LIBTREE. A library a wheel brings along (found through its
# $ORIGIN run path, e.g. in NAME.libs/) is not looked up there.
copy_needed_tree() {
    root=$1 dir=$2 libs=$3
    want=""
    for f in $(find "$root$dir" -type f -name '*.so*' | LC_ALL=C sort); do
        [ "$(head -c 4 "$f" | tr -d '\177')" = ELF ] || continue
        o=$(dirname "$f")
        rp=$(readelf -d "$f" | sed -n 's/.*(R[UN]*PATH).*\[\(.*\)\]/\1/p' | sed "s|\$ORIGIN|$o|g; s|\\\${ORIGIN}|$o|g" | tr ':' ' ')
        for lib in $(needed "$f"); do
            found=""
            for d in $rp; do [ -e "$d/$lib" ] && found=1; done
            [ -n "$found" ] || want="$want $lib"
        done
    done
    NEEDED_BY="a shared object under $dir" copy_libs "$root" "$libs" $want
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

# The pip platform tags for BUNDLE_ARCH: manylinux2014 (glibc 2.17, which
# Debian bookworm's 2.36 runs) and the older ones pip counts in it.
pip_platform() {
    case "$BUNDLE_ARCH" in
        x86_64) echo manylinux2014_x86_64 ;;
        aarch64) echo manylinux2014_aarch64 ;;
        *) echo "recipe: no manylinux wheels for BUNDLE_ARCH=$BUNDLE_ARCH (declare the recipe's arches)" >&2; return 1 ;;
    esac
}

# pip_install REQUIREMENTS TARGET: install the wheels REQUIREMENTS pins
# (every line NAME==VERSION --hash=sha256:H, dependencies included: no
# resolver runs) into TARGET, for the bundle's CPython $PY_VERSION (3.11)
# on BUNDLE_ARCH, never the build host's. Wheels are cached as
# $WHEEL_CACHE/<sha256>/<file name>: a wheel whose hash is there is never
# downloaded again. pip then installs from that cache only (--no-index),
# checking every hash, without compiling (.pyc files are made by
# pyc_compile, reproducibly) and without console scripts (their #! line
# would name the build host's Python). What pip writes about the install
# itself (RECORD, INSTALLER, REQUESTED) is removed, so TARGET depends only
# on the wheels' bytes, not on the pip version.
pip_install() {
    req=$1 target=$2
    [ -f "$req" ] || { echo "recipe: pip_install: no requirements file $req" >&2; return 1; }
    plat=$(pip_platform) || return 1
    pyver=${PY_VERSION:-3.11}
    abi=cp$(echo "$pyver" | tr -d .)
    hashes=$(sed -n 's/.*--hash=sha256:\([0-9a-f]\{64\}\).*/\1/p' "$req")
    [ -n "$hashes" ] || { echo "recipe: pip_install: $req pins no --hash=sha256:" >&2; return 1; }
    pins=$(grep -c '^[A-Za-z0-9]' "$req")
    [ "$pins" -eq "$(echo "$hashes" | wc -l)" ] ||
        { echo "recipe: pip_install: $req: $pins requirements but $(echo "$hashes" | wc -l) hashes (one wheel, one hash each)" >&2; return 1; }
    export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
    pip_flags="--only-binary :all: --platform $plat --python-version $pyver --implementation cp --abi $abi --require-hashes --no-deps"
    missing=0
    for h in $hashes; do
        [ -n "$(find "$WHEEL_CACHE/$h" -maxdepth 1 -name '*.whl' 2>/dev/null)" ] || missing=$((missing + 1))
    done
    if [ "$missing" -gt 0 ]; then
        echo "recipe: downloading $missing wheel(s) of $req" >&2
        dl="$WORK/pip-download"
        rm -rf "$dl"
        mkdir -p "$dl" "$WHEEL_CACHE"
        # shellcheck disable=SC2086
        "$PIP_PYTHON" -m pip download -q --no-cache-dir $pip_flags -d "$dl" -r "$req" >&2 ||
            { echo "recipe: pip download of $req failed (PyPI unreachable, or a pinned wheel gone?)" >&2; return 1; }
        for f in "$dl"/*; do
            case "$f" in *.whl) ;; *) echo "recipe: pip download gave $f, not a wheel" >&2; return 1 ;; esac
            h=$(sha256sum "$f" | cut -d' ' -f1)
            mkdir -p "$WHEEL_CACHE/$h"
            mv "$f" "$WHEEL_CACHE/$h/"
        done
    fi
    links="$WORK/pip-links"
    rm -rf "$links"
    mkdir -p "$links"
    for h in $hashes; do
        f=$(find "$WHEEL_CACHE/$h" -maxdepth 1 -name '*.whl' | head -n1)
        [ -n "$f" ] || { echo "recipe: wheel sha256:$h of $req not downloaded (does the pin match a wheel for $plat, CPython $pyver?)" >&2; return 1; }
        ln -s "$f" "$links/"
    done
    mkdir -p "$target"
    # shellcheck disable=SC2086
    "$PIP_PYTHON" -m pip install -q --no-cache-dir $pip_flags --no-index --find-links "$links" \
        --no-compile --no-warn-script-location --target "$target" -r "$req" >&2 ||
        { echo "recipe: pip install of $req into $target failed" >&2; return 1; }
    rm -rf "$target/bin"
    find "$target" -path '*.dist-info/*' \( -name RECORD -o -name INSTALLER -o -name REQUESTED -o -name direct_url.json \) -delete
}

# pyc_compile ROOTFS PYTHON DIR...: byte-compile the .py files under the
# image's DIRs (paths inside ROOTFS) with the image's own interpreter
# PYTHON (run through the image's dynamic loader, so BUNDLE_ARCH must be
# the build host's or run by qemu-user's binfmt), as unchecked-hash .pyc:
# no timestamps in them (the image is read-only, so the sources never
# change), the paths they name are the image's, and Python need not
# compile anything at each start.
pyc_compile() {
    root=$1 py=$2
    shift 2
    interp=$(readelf -l "$root$py" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    [ -n "$interp" ] || { echo "recipe: pyc_compile: $root$py has no ELF interpreter" >&2; return 1; }
    libpath=""
    for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu \
        /lib/arm-linux-gnueabihf /usr/lib/arm-linux-gnueabihf; do
        [ -d "$root$d" ] && libpath="$libpath${libpath:+:}$root$d"
    done
    dirs=""
    for d in "$@"; do dirs="$dirs $root$d"; done
    # env -i: no PYTHON* variable of the caller applies. PYTHONHASHSEED: set
    # and frozenset constants are written in hash order;
    # -B: modules the compiler itself imports are not cached on the way, with
    # timestamps, before compileall gets to them (-f rewrites any such).
    # shellcheck disable=SC2086
    env -i PATH=/usr/bin:/bin PYTHONHASHSEED=0 "$root$interp" --library-path "$libpath" "$root$py" -s -B -m compileall \
        -q -f -j 1 --invalidation-mode unchecked-hash -s "$root" -p / $dirs >&2 ||
        { echo "recipe: pyc_compile: compiling $* with the image's $py failed (see above)" >&2; return 1; }
}
