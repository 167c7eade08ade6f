#!/usr/bin/env bash
# Debian's own builds of what an image for another architecture needs from
# Debian, unpacked once into the cache; prints the directory.
#
#   image/foreign.sh DEBARCH   (Debian's name: arm64, or armhf for armv7)
#
# busybox-static (the rescue shell) and systemd-boot-efi (the UEFI loader),
# both at apt's candidate version for ARCH: the same release as the host's
# x86_64 packages. Authenticated by apt (signed Release -> Packages -> .deb
# SHA-256); cached under $NUVOL_CACHE/foreign/ARCH/KEY, KEY = the versions.
set -euo pipefail
arch=${1:?usage: foreign.sh ARCH}
case "$arch" in arm64|armhf) ;; *) echo "foreign.sh: ARCH=$arch: only arm64 or armhf" >&2; exit 2 ;; esac
cache=${NUVOL_CACHE:-/var/cache/nuvol}
pkgs=(busybox-static systemd-boot-efi)
specs=()
for p in "${pkgs[@]}"; do
    v=$(apt-cache policy "$p:$arch" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    [ -n "$v" ] && [ "$v" != "(none)" ] || {
        echo "foreign.sh: apt knows no $p:$arch (image/deps.sh adds the architecture: dpkg --add-architecture $arch; apt-get update)" >&2; exit 1; }
    specs+=("$p:$arch=$v")
done
key=$(printf '%s\n' "${specs[@]}" | sha256sum | cut -c1-16)
dest=$cache/foreign/$arch/$key
if [ ! -f "$dest/.complete" ]; then
    tmp=$cache/foreign/$arch/.tmp-$$
    rm -rf "$tmp"; mkdir -p "$tmp/debs" "$tmp/root"
    (cd "$tmp/debs" && apt-get download -q "${specs[@]}" >/dev/null) || {
        echo "foreign.sh: cannot download ${specs[*]}" >&2; rm -rf "$tmp"; exit 1; }
    for d in "$tmp"/debs/*.deb; do dpkg-deb -x "$d" "$tmp/root"; done
    printf '%s\n' "${specs[@]}" > "$tmp/root/.complete"
    rm -rf "$dest"; mv "$tmp/root" "$dest"; rm -rf "$tmp"
fi
echo "$dest"
