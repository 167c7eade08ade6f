#!/usr/bin/env bash
# Boot a nuvol disk image in QEMU.
#
#   qemu/run.sh [options] IMAGE
#     --firmware bios|uefi   SeaBIOS (default) or OVMF
#     --port N               host port forwarded to the guest's panel (port 80); default 8080
#     --https-port N         host port forwarded to the guest's HTTPS panel (443); default none
#     --qmp PATH             QMP socket (for system_powerdown and friends)
#     --serial FILE          serial console to FILE instead of this terminal
#     --mem MIB              guest memory; default 512
#     --vars FILE            OVMF variable store to use (default: a temporary copy)
#     --kernel K --initrd I --append CMDLINE
#                            boot a kernel directly (benchmarks' Debian reference)
#
# Acceleration: KVM when it really works here (probed once and cached),
# otherwise TCG. Set QEMU_ACCEL=kvm|tcg to force one.
set -euo pipefail

firmware=bios port=8080 https_port="" qmp="" serial="" mem=512 vars="" kernel="" initrd="" append=""
while [ $# -gt 1 ]; do
    case $1 in
        --firmware) firmware=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --https-port) https_port=$2; shift 2 ;;
        --qmp) qmp=$2; shift 2 ;;
        --serial) serial=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --vars) vars=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --initrd) initrd=$2; shift 2 ;;
        --append) append=$2; shift 2 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
image=$1
[ -f "$image" ] || { echo "run.sh: no image at $image (run 'make image')" >&2; exit 1; }

accel=${QEMU_ACCEL:-$("$(dirname "$0")/probe-kvm.sh")}
args=(-machine q35 -accel "$accel" -m "$mem" -smp 2 -nographic -no-user-config -nodefaults
      -drive "file=$image,if=virtio,format=raw,cache=unsafe"
      -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:80${https_port:+,hostfwd=tcp:127.0.0.1:$https_port-:443}"
      -device virtio-net-pci,netdev=n0,romfile=
      -device i6300esb -watchdog-action reset
      -device virtio-rng-pci)
[ "$accel" = kvm ] && args+=(-cpu host) || args+=(-cpu qemu64)
# Tell the guest which host port reaches its HTTPS panel, so plain-HTTP
# redirects point there ([panel] public_https_port in nuvol.toml wins).
[ -n "$https_port" ] && args+=(-smbios "type=11,value=nuvol:panel.public_https_port=$https_port")
case $firmware in
    bios) ;;
    uefi)
        code=/usr/share/OVMF/OVMF_CODE_4M.fd
        if [ -z "$vars" ]; then
            vars=$(mktemp "${TMPDIR:-/tmp}/nuvol-ovmf-vars.XXXXXX")
            trap 'rm -f "$vars"' EXIT
            cp /usr/share/OVMF/OVMF_VARS_4M.fd "$vars"
        fi
        args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
               -drive "if=pflash,format=raw,unit=1,file=$vars") ;;
    *) echo "run.sh: --firmware must be bios or uefi" >&2; exit 2 ;;
esac
[ -n "$kernel" ] && args+=(-kernel "$kernel" -initrd "$initrd" -append "$append")
[ -n "$qmp" ] && args+=(-qmp "unix:$qmp,server=on,wait=off")
if [ -n "$serial" ]; then
    args+=(-serial "file:$serial" -monitor none)
else
    args+=(-serial mon:stdio)
    echo "nuvol: booting $image ($firmware, $accel); panel will be at http://127.0.0.1:$port/ — quit with Ctrl-a x" >&2
fi
exec qemu-system-x86_64 "${args[@]}"
