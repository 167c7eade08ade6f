#!/usr/bin/env bash
# The C side of a static armv7-unknown-linux-musleabihf `nuvol`, made once
# into the cache; prints the directory (include/ and lib/).
#
#   image/armv7-sysroot.sh
#
# rustup has no rust-std for that target at the pinned toolchain (its
# download answers 404), so the Makefile builds std from rust-src
# (-Zbuild-std) and links with rust-lld, and this directory stands in for
# the parts of rust-std's self-contained/ it then lacks:
#   - musl 1.2.3 for armhf: headers, crt1.o/crti.o/crtn.o, libc.a, from
#     Debian's musl-dev:armhf (version and SHA-256 pinned below; fetched with
#     a throwaway apt configuration of its own, as the host's apt cannot
#     take armhf: the security mirror's armhf index was seen broken, which
#     breaks `apt-get update` for the whole system);
#   - crtbegin.o/crtend.o from Debian's armhf cross gcc;
#   - libunwind.a: LLVM's libunwind from rust-src (src/llvm-project), the
#     unwinder std's `unwind` crate links on musl, built with the cross gcc
#     against the musl headers (GCC's libgcc_eh wants glibc's _dl_find_object).
# Cached under $NUVOL_CACHE/armv7-sysroot/KEY, KEY = the .deb's hash, the
# rustc and gcc versions and this script.
set -euo pipefail
cache=${NUVOL_CACHE:-/var/cache/nuvol}
musl_ver=1.2.3-1
musl_sha256=3a9dbb8ae66716f117dce87558fb47a161db0eebf0700cc6bf84ef6871ce7d38
cross=arm-linux-gnueabihf
for t in $cross-gcc $cross-g++ $cross-ar rustc; do
    command -v $t >/dev/null || { echo "armv7-sysroot: $t missing (ARCH=armv7 image/deps.sh build installs it)" >&2; exit 1; }
done
rust_src=$(rustc --print sysroot)/lib/rustlib/src/rust
unwind_src=$rust_src/src/llvm-project/libunwind
[ -d "$unwind_src/src" ] || { echo "armv7-sysroot: $unwind_src missing (rustup component add rust-src)" >&2; exit 1; }
rustc_hash=$(rustc -vV | sed -n 's/^commit-hash: //p')
gcc_ver=$($cross-gcc -dumpfullversion)
key=$( { echo "musl-dev:armhf $musl_ver $musl_sha256"; rustc -vV; echo "gcc $gcc_ver"; cat "$0"; } | sha256sum | cut -c1-16)
dest=$cache/armv7-sysroot/$key
if [ -f "$dest/.complete" ]; then echo "$dest"; exit 0; fi

# The .deb, kept beside the other downloaded packages; its name carries the version.
deb=$cache/debs/musl-dev_${musl_ver}_armhf.deb
if ! echo "$musl_sha256  $deb" | sha256sum --quiet -c >/dev/null 2>&1; then
    mkdir -p "$cache/debs"
    tmp=$(mktemp -d "$cache/debs/.armhf.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    apt_dir=$tmp/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo 'deb [arch=armhf signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main' \
        > "$apt_dir/sources.list"
    apt_opts=(-q -o APT::Architecture=armhf -o APT::Architectures=armhf
        -o Dir::State="$apt_dir" -o Dir::State::Lists="$apt_dir/lists" -o Dir::State::status=/dev/null
        -o Dir::Cache="$apt_dir" -o Dir::Cache::archives="$apt_dir/archives"
        -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    echo "armv7-sysroot: downloading musl-dev:armhf $musl_ver" >&2
    apt-get "${apt_opts[@]}" update >/dev/null
    (cd "$tmp" && apt-get "${apt_opts[@]}" download "musl-dev=$musl_ver" >/dev/null)
    echo "$musl_sha256  $tmp/musl-dev_${musl_ver}_armhf.deb" | sha256sum --quiet -c ||
        { echo "armv7-sysroot: musl-dev_${musl_ver}_armhf.deb does not have the pinned SHA-256" >&2; exit 1; }
    mv "$tmp/musl-dev_${musl_ver}_armhf.deb" "$deb"; rm -rf "$tmp"
fi

echo "armv7-sysroot: making $dest" >&2
tmp=$cache/armv7-sysroot/.tmp-$$
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"; mkdir -p "$tmp/deb" "$tmp/root/lib" "$tmp/unwind"
dpkg-deb -x "$deb" "$tmp/deb"
mv "$tmp/deb/usr/include/arm-linux-musleabihf" "$tmp/root/include"
cp "$tmp"/deb/usr/lib/arm-linux-musleabihf/{crt1.o,crti.o,crtn.o,Scrt1.o,rcrt1.o,libc.a} "$tmp/root/lib/"
# musl keeps libm, libpthread, ... inside libc.a; the empty archives let -lm etc. resolve.
for l in m pthread rt dl util resolv xnet; do cp "$tmp/deb/usr/lib/arm-linux-musleabihf/lib$l.a" "$tmp/root/lib/"; done
gcc_lib=$($cross-gcc -print-file-name=crtbegin.o); gcc_lib=${gcc_lib%/*}
cp "$gcc_lib"/{crtbegin.o,crtend.o,crtbeginS.o,crtendS.o} "$tmp/root/lib/"

# libunwind: the files Rust's own build compiles for its musl targets; the
# sources' path is mapped to where official builds have them.
flags=(-nostdinc -isystem "$tmp/root/include" -isystem "$($cross-gcc -print-file-name=include)"
    -I "$unwind_src/include" -O2 -fPIC -ffunction-sections -fdata-sections
    -fstrict-aliasing -funwind-tables -fvisibility=hidden
    -D_LIBUNWIND_DISABLE_VISIBILITY_ANNOTATIONS -D_LIBUNWIND_IS_NATIVE_ONLY -DNDEBUG
    "-ffile-prefix-map=$rust_src=/rustc/$rustc_hash")
for f in UnwindLevel1.c UnwindLevel1-gcc-ext.c Unwind-sjlj.c; do
    $cross-gcc "${flags[@]}" -std=c99 -c "$unwind_src/src/$f" -o "$tmp/unwind/${f%.*}.o"
done
for f in UnwindRegistersRestore.S UnwindRegistersSave.S; do
    $cross-gcc "${flags[@]}" -c "$unwind_src/src/$f" -o "$tmp/unwind/${f%.*}.o"
done
for f in libunwind.cpp Unwind-EHABI.cpp Unwind-seh.cpp; do
    $cross-g++ "${flags[@]}" -nostdinc++ -std=c++17 -fno-exceptions -fno-rtti -c "$unwind_src/src/$f" -o "$tmp/unwind/${f%.*}.o"
done
$cross-ar rcD "$tmp/root/lib/libunwind.a" "$tmp"/unwind/*.o

echo "musl-dev:armhf $musl_ver, gcc $gcc_ver, libunwind from rustc $rustc_hash" > "$tmp/root/.complete"
mkdir -p "$cache/armv7-sysroot"
rm -rf "$dest"; mv "$tmp/root" "$dest"
echo "$dest"
