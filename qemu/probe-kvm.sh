#!/usr/bin/env bash
# Print "kvm" if KVM really runs guests here, else "tcg". /dev/kvm can exist
# and still fail at the first guest instruction (nested virtualisation), so
# boot SeaBIOS with no disk for a few seconds: a working KVM keeps running
# until the timeout; a broken one aborts. Cached per boot of the host.
set -u
cache=${NUVOL_CACHE:-/var/cache/nuvol}/kvm-probe
boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo none)
if [ -f "$cache" ] && [ "$(head -1 "$cache")" = "$boot_id" ]; then
    tail -1 "$cache"; exit 0
fi
result=tcg
if [ -w /dev/kvm ]; then
    ( timeout 4 qemu-system-x86_64 -machine q35 -accel kvm -cpu host -m 64 -display none \
        -nodefaults -no-user-config >/dev/null 2>&1 ) 2>/dev/null
    [ $? -eq 124 ] && result=kvm
fi
mkdir -p "$(dirname "$cache")" && printf '%s\n%s\n' "$boot_id" "$result" > "$cache"
echo "$result"
