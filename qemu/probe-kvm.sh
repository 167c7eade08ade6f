#!/usr/bin/env bash
# Print "kvm" if KVM really runs nuvol's kernel here, else "tcg".
#
#   qemu/probe-kvm.sh [KERNEL]     (default: out/bzImage of this checkout)
#
# /dev/kvm can exist and still fail under nested virtualisation, and not
# always at the first instruction: firmware runs, then the kernel's
# decompressor stops with "KVM internal error" on its first VEX-encoded
# instruction while QEMU keeps running, a guest that hangs forever. So the
# probe boots the kernel itself with no root file system and asks for its
# panic ("VFS: Unable to mount root fs") on the serial console: only a
# kernel that ran to that point counts. Without a kernel the answer is tcg
# (and is not cached). The result is cached per boot of the host.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
kernel=${1:-$here/out/bzImage}
cache=${NUVOL_CACHE:-/var/cache/nuvol}/kvm-probe
boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo none)
key="$boot_id kernel-probe-v2"
if [ -f "$cache" ] && [ "$(head -1 "$cache")" = "$key" ]; then
    tail -1 "$cache"; exit 0
fi
[ -w /dev/kvm ] || { echo tcg; exit 0; }
[ -f "$kernel" ] || { echo tcg; exit 0; }
result=tcg
serial=$(mktemp "${TMPDIR:-/tmp}/nuvol-kvm-probe.XXXXXX")
errs=$(mktemp "${TMPDIR:-/tmp}/nuvol-kvm-probe.XXXXXX")
qemu-system-x86_64 -machine q35 -accel kvm -cpu host -m 128 -display none \
    -nodefaults -no-user-config -no-reboot -serial "file:$serial" \
    -kernel "$kernel" -append "console=ttyS0 panic=-1" >/dev/null 2>"$errs" &
qemu=$!
# A working KVM panics in about a second; a broken one says so on stderr.
for _ in $(seq 200); do
    grep -aq 'Kernel panic - not syncing' "$serial" && { result=kvm; break; }
    grep -aqi 'internal error' "$errs" && break
    kill -0 "$qemu" 2>/dev/null || break
    sleep 0.1
done
kill "$qemu" 2>/dev/null; wait "$qemu" 2>/dev/null
grep -aq 'Kernel panic - not syncing' "$serial" && result=kvm
rm -f "$errs"
rm -f "$serial"
mkdir -p "$(dirname "$cache")" && printf '%s\n%s\n' "$key" "$result" > "$cache"
echo "$result"
