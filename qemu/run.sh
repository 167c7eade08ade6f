#!/usr/bin/env bash
# Boot a nuvol disk image in QEMU.
#
#   qemu/run.sh [options] IMAGE
#     --arch x86_64|arm64|armv7
#                            the image's architecture; default from its name
#                            (nuvol-arm64.img, nuvol-armv7.img), else x86_64.
#                            arm64 boots qemu-system-aarch64 -M virt, armv7
#                            qemu-system-arm -M virt, both with edk2 (UEFI only)
#     --firmware bios|uefi   SeaBIOS (default) or OVMF
#     --port N               host port forwarded to the guest's panel (port 80); default 8080
#     --https-port N         host port forwarded to the guest's HTTPS panel (443); default none
#     --forward H:G          also forward host TCP port H to the guest's port G (a service's
#                            published port); repeatable
#     --log FILE             with the console on this terminal, also write it to FILE
#     --tap IF               attach the NIC to the existing tap device IF (e.g. on a
#                            bridge in a network namespace) instead of QEMU user-net;
#                            --port/--https-port/--forward then do nothing
#     --mac MAC              the NIC's MAC address (needed when several VMs share a bridge)
#     --qmp PATH             QMP socket (for system_powerdown and friends)
#     --serial FILE          serial console to FILE instead of this terminal
#     --serial-socket PATH   with --serial: also a unix socket at PATH to type on the
#                            serial console (QEMU waits for one client before it starts
#                            the guest; the client must keep reading what comes out)
#     --mem MIB              guest memory; default 512
#     --smp N                virtual CPUs; default 2
#     --drive FILE           attach FILE as another virtio disk, enumerated before IMAGE
#                            (the guest's vda) while the firmware still boots IMAGE;
#                            repeatable (a second stick plugged in)
#     --usb                  an xHCI controller (QMP id `xhci`) to plug USB sticks into
#                            while the box runs (QMP blockdev-add + device_add usb-storage)
#     --usb-stick FILE       with --usb implied: FILE plugged in as a USB stick at power-on
#     --vars FILE            OVMF variable store to use (default: a temporary copy)
#     --kernel K --initrd I --append CMDLINE
#                            boot a kernel directly (benchmarks' Debian reference)
#
# Acceleration: KVM when it really works here (probed once and cached),
# otherwise TCG. Set QEMU_ACCEL=kvm|tcg to force one.
set -euo pipefail

arch="" firmware=bios port=8080 https_port="" qmp="" serial="" serial_socket="" mem=512 smp=2 vars="" kernel="" initrd="" append=""
forwards="" log="" tap="" mac="" drives=() usb="" sticks=()
while [ $# -gt 1 ]; do
    case $1 in
        --arch) arch=$2; shift 2 ;;
        --firmware) firmware=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --https-port) https_port=$2; shift 2 ;;
        --forward)
            [[ $2 =~ ^[0-9]+:[0-9]+$ ]] || { echo "run.sh: --forward wants HOSTPORT:GUESTPORT, got $2" >&2; exit 2; }
            forwards+=",hostfwd=tcp:127.0.0.1:${2%%:*}-:${2##*:}"; shift 2 ;;
        --log) log=$2; shift 2 ;;
        --tap) tap=$2; shift 2 ;;
        --mac) mac=$2; shift 2 ;;
        --qmp) qmp=$2; shift 2 ;;
        --serial) serial=$2; shift 2 ;;
        --serial-socket) serial_socket=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --drive) [ -f "$2" ] || { echo "run.sh: --drive: no file $2" >&2; exit 2; }
            drives+=("$2"); shift 2 ;;
        --smp) smp=$2; shift 2 ;;
        --usb) usb=1; shift ;;
        --usb-stick) [ -f "$2" ] || { echo "run.sh: --usb-stick: no file $2" >&2; exit 2; }
            usb=1; sticks+=("$2"); shift 2 ;;
        --vars) vars=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --initrd) initrd=$2; shift 2 ;;
        --append) append=$2; shift 2 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 1 ] || { sed -n '2,38p' "$0" >&2; exit 2; }
image=$1
[ -f "$image" ] || { echo "run.sh: no image at $image (run 'make image')" >&2; exit 1; }
if [ -z "$arch" ]; then
    case $(basename "$image") in *arm64*) arch=arm64 ;; *armv7*) arch=armv7 ;; *) arch=x86_64 ;; esac
fi

case $arch in
    x86_64)
        accel=${QEMU_ACCEL:-$("$(dirname "$0")/probe-kvm.sh")}
        qemu=qemu-system-x86_64
        args=(-machine q35) ;;
    arm64)
        # No KVM for another architecture: TCG. A Cortex-A53, the core of
        # most arm64 routers (RK3328, BCM2837); edk2 has no BIOS mode.
        accel=tcg qemu=qemu-system-aarch64 firmware=uefi
        # acpi=off: edk2 then hands the kernel QEMU's device tree, as U-Boot
        # does on the boards (the kernel has no ACPI for arm64).
        args=(-machine virt,acpi=off -cpu cortex-a53) ;;
    armv7)
        # TCG, UEFI only, as arm64. A Cortex-A7 (Raspberry Pi 2, Allwinner
        # H3: most 32-bit boards), no LPAE in the kernel: highmem=off keeps
        # every device below 4 GiB (the high PCI window and ECAM above it
        # are out of a 32-bit physical address's reach).
        accel=tcg qemu=qemu-system-arm firmware=uefi
        args=(-machine virt,highmem=off -cpu cortex-a7) ;;
    *) echo "run.sh: --arch must be x86_64, arm64 or armv7" >&2; exit 2 ;;
esac
args+=(-accel "$accel" -m "$mem" -smp "$smp" -nographic -no-user-config -nodefaults)
if [ ${#drives[@]} -eq 0 ]; then
    args+=(-drive "file=$image,if=virtio,format=raw,cache=unsafe")
else
    # Extra disks first on the PCI bus (the guest names them first); the
    # image keeps bootindex 0, so SeaBIOS and OVMF still boot it.
    for i in "${!drives[@]}"; do
        args+=(-drive "file=${drives[$i]},if=none,id=extra$i,format=raw,cache=unsafe"
               -device "virtio-blk-pci,drive=extra$i")
    done
    args+=(-drive "file=$image,if=none,id=boot,format=raw,cache=unsafe"
           -device "virtio-blk-pci,drive=boot,bootindex=0")
fi
if [ -n "$usb" ]; then
    args+=(-device qemu-xhci,id=xhci)
    for i in "${!sticks[@]}"; do
        args+=(-drive "file=${sticks[$i]},if=none,id=stick$i,format=raw,cache=unsafe"
               -device "usb-storage,bus=xhci.0,drive=stick$i")
    done
fi
args+=(-device "virtio-net-pci,netdev=n0,romfile=${mac:+,mac=$mac}"
      -device i6300esb -watchdog-action reset
      -device virtio-rng-pci)
if [ -n "$tap" ]; then
    args+=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no")
else
    args+=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:80${https_port:+,hostfwd=tcp:127.0.0.1:$https_port-:443}$forwards")
fi
if [ "$arch" = x86_64 ]; then
    [ "$accel" = kvm ] && args+=(-cpu host) || args+=(-cpu qemu64)
fi
# Tell the guest which host port reaches its HTTPS panel, so plain-HTTP
# redirects point there ([panel] public_https_port in nuvol.toml wins).
[ -n "$https_port" ] && args+=(-smbios "type=11,value=nuvol:panel.public_https_port=$https_port")
case $firmware in
    bios) ;;
    uefi)
        if [ "$arch" = arm64 ]; then
            code=/usr/share/AAVMF/AAVMF_CODE.fd vars_template=/usr/share/AAVMF/AAVMF_VARS.fd
        elif [ "$arch" = armv7 ]; then
            code=/usr/share/AAVMF/AAVMF32_CODE.fd vars_template=/usr/share/AAVMF/AAVMF32_VARS.fd
        else
            code=/usr/share/OVMF/OVMF_CODE_4M.fd vars_template=/usr/share/OVMF/OVMF_VARS_4M.fd
        fi
        if [ -z "$vars" ]; then
            vars=$(mktemp "${TMPDIR:-/tmp}/nuvol-ovmf-vars.XXXXXX")
            trap 'rm -f "$vars"' EXIT
            cp "$vars_template" "$vars"
        fi
        args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
               -drive "if=pflash,format=raw,unit=1,file=$vars") ;;
    *) echo "run.sh: --firmware must be bios or uefi" >&2; exit 2 ;;
esac
[ -n "$kernel" ] && args+=(-kernel "$kernel" -initrd "$initrd" -append "$append")
[ -n "$qmp" ] && args+=(-qmp "unix:$qmp,server=on,wait=off")
if [ -n "$serial" ] && [ -n "$serial_socket" ]; then
    args+=(-chardev "socket,id=ser0,path=$serial_socket,server=on,wait=on,logfile=$serial"
           -serial chardev:ser0 -monitor none)
elif [ -n "$serial" ]; then
    args+=(-serial "file:$serial" -monitor none)
elif [ -n "$log" ]; then
    args+=(-chardev "stdio,id=con,mux=on,logfile=$log" -serial chardev:con -mon chardev=con,mode=readline)
    echo "nuvol: booting $image ($arch, $firmware, $accel); panel will be at http://127.0.0.1:$port/ — quit with Ctrl-a x" >&2
else
    args+=(-serial mon:stdio)
    echo "nuvol: booting $image ($arch, $firmware, $accel); panel will be at http://127.0.0.1:$port/ — quit with Ctrl-a x" >&2
fi
exec "$qemu" "${args[@]}"
