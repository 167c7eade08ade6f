#!/usr/bin/env bash
# Build a nuvol disk image, reproducibly.
#
#   image/build.sh ARCH NUVOL_BINARY KERNEL OUT_IMAGE
#
# ARCH is x86_64, arm64 or armv7. Layout (GPT, 512-byte sectors):
#   p1 nuvol-boot  FAT16 ESP: systemd-boot (UEFI), OS slots /A and /B
#                  (kernel `bzImage` + initrd.img), nuvol.toml; on x86_64 also
#                  legacy-BIOS bootable through syslinux
#   p2 nuvol-data  ext4, small in the image; grown to fill the disk at first boot
# On arm64 and armv7 p1 starts at 16 MiB: a board's own U-Boot goes in front
# of it (Rockchip: idbloader at sector 64, u-boot.itb at 8 MiB). ARM images
# carry a hybrid MBR: beside the GPT's protective entry (type 0xEE from
# sector 1), an MBR entry for p1 (FAT16, type 0x0E), for firmware that reads
# only an MBR (the Raspberry Pi's); UEFI and Linux still take the GPT. The
# slot's kernel file keeps the name `bzImage` on every architecture (it is
# the OS update's part name); on arm64 it holds an EFI zboot image, on armv7
# a zImage with the EFI stub.
# Same inputs and SOURCE_DATE_EPOCH give the same bytes: every timestamp is
# SOURCE_DATE_EPOCH, every UUID and volume id is derived from the content.
set -euo pipefail
export LC_ALL=C TZ=UTC

arch=$1 nuvol=$2 kernel=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH (the Makefile takes it from the last commit)}"
cache=${NUVOL_CACHE:-/var/cache/nuvol}

# Each slot's files have a fixed size, the part zero-padded: an OS update
# overwrites them in place and allocates nothing on FAT, so a power cut
# mid-update cannot break the file system (docs/boot.md, "Update").
SLOT_VERSION_BYTES=64
DATA_MIB=6       # grown on first boot
case "$arch" in
    x86_64)
        BOOT_MIB=40      # two OS slots of 14 MiB each, loaders, room for growth
        SLOT_KERNEL_MIB=6 SLOT_INITRD_MIB=8
        BOOT_START=2048  # sectors: 1 MiB
        CMDLINE="console=tty0 console=ttyS0,115200n8 loglevel=4 panic=10"
        busybox=/bin/busybox bb_run=
        efi_loader=/usr/lib/systemd/boot/efi/systemd-bootx64.efi efi_name=BOOTX64.EFI ;;
    arm64)
        BOOT_MIB=40      # two OS slots of 16 MiB each (the kernel ~3.4 MiB), the loader
        SLOT_KERNEL_MIB=8 SLOT_INITRD_MIB=8
        BOOT_START=32768 # sectors: 16 MiB, room for a board's U-Boot
        # No console=: the kernel takes the device tree's stdout-path (QEMU
        # virt: the PL011, ttyAMA0; a Rockchip board: its debug UART).
        CMDLINE="loglevel=4 panic=10"
        foreign=$("$here/foreign.sh" arm64)
        # Its busybox and nuvol run here under qemu-user (applet list, version).
        busybox=$foreign/bin/busybox bb_run=qemu-aarch64-static
        efi_loader=$foreign/usr/lib/systemd/boot/efi/systemd-bootaa64.efi efi_name=BOOTAA64.EFI ;;
    armv7)
        # As arm64, with Debian's armhf builds (armhf: the hard-float ARMv7
        # port) and systemd-boot's ARM loader.
        BOOT_MIB=40      # two OS slots of 16 MiB each, the loader
        SLOT_KERNEL_MIB=8 SLOT_INITRD_MIB=8
        BOOT_START=32768 # sectors: 16 MiB, room for a board's U-Boot
        CMDLINE="loglevel=4 panic=10"
        foreign=$("$here/foreign.sh" armhf)
        busybox=$foreign/bin/busybox bb_run=qemu-arm-static
        efi_loader=$foreign/usr/lib/systemd/boot/efi/systemd-bootarm.efi efi_name=BOOTARM.EFI ;;
    *) echo "build.sh: no image for ARCH=$arch (x86_64, arm64 or armv7)" >&2; exit 2 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- gen_init_cpio from the kernel source (tiny C tool, cached) ------------
gic=$cache/tools/gen_init_cpio
if [ ! -x "$gic" ]; then
    src=$(ls -d "$cache"/src/linux-*/usr/gen_init_cpio.c 2>/dev/null | head -1 || true)
    if [ -z "$src" ]; then
        mkdir -p "$work/gic"
        tar -C "$work/gic" --wildcards --strip-components=1 -xf /usr/src/linux-source-6.1.tar.xz '*/usr/gen_init_cpio.c'
        src=$work/gic/usr/gen_init_cpio.c
    fi
    mkdir -p "$cache/tools"
    gcc -O2 -o "$gic.tmp" "$src" && mv "$gic.tmp" "$gic"
fi

# --- initramfs: the whole base OS is /init = nuvol --------------------------
# plus Debian's static busybox for the rescue shell (docs/boot.md), its
# applets as symlinks in /bin (not init and linuxrc: PID 1 is /init alone),
# and /bin/nuvol -> /init for `nuvol rescue`.
file -L "$busybox" | grep -q 'statically linked' || { echo "build.sh: $busybox is not Debian's busybox-static" >&2; exit 1; }
install -m 0755 "$nuvol" "$work/init"
install -m 0755 "$busybox" "$work/busybox"
touch -h -d "@$SOURCE_DATE_EPOCH" "$work/init" "$work/busybox"
cat > "$work/initramfs.list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
nod /dev/null 0666 0 0 c 1 3
dir /proc 0555 0 0
dir /sys 0555 0 0
dir /run 0755 0 0
dir /tmp 1777 0 0
dir /boot 0700 0 0
dir /data 0755 0 0
dir /etc 0755 0 0
dir /root 0700 0 0
file /init $work/init 0755 0 0
dir /bin 0755 0 0
file /bin/busybox $work/busybox 0755 0 0
slink /bin/nuvol /init 0777 0 0
LIST
$bb_run "$busybox" --list | sort | grep -vx -e busybox -e nuvol -e init -e linuxrc | sed 's|.*|slink /bin/& busybox 0777 0 0|' >> "$work/initramfs.list"
"$gic" -t "$SOURCE_DATE_EPOCH" "$work/initramfs.list" | zstd -q -19 -T1 -c > "$work/initrd.img"

# --- content-derived identifiers --------------------------------------------
digest=$( { echo "$arch"; cat "$kernel" "$work/initrd.img" "$here/nuvol.toml" "$0"; } | sha256sum | cut -c1-64)
uuid() { # uuid NAME -> a UUID derived from the content digest and NAME
    local h; h=$(printf '%s %s' "$digest" "$1" | sha256sum)
    printf '%s-%s-4%s-8%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}
volid=${digest:0:8}

# --- kernel command line: name this image's boot partition -----------------
# PID 1 takes nuvol.toml and the data partition only from the disk holding
# the boot partition named here, never from another stick (docs/boot.md).
CMDLINE="$CMDLINE nuvol.boot=PARTUUID=$(uuid part-boot)"

# --- boot partition (FAT16: UEFI reads it; too small for FAT32) -------------------------------------------------
root=$work/bootfs
mkdir -p "$root/EFI/BOOT" "$root/loader/entries" "$root/A" "$root/B"
version=$($bb_run "$nuvol" --version | awk '{print $2}')
pad() { # pad FILE BYTES: zero-pad FILE to BYTES, refusing a bigger one
    local size; size=$(stat -c %s "$1")
    [ "$size" -le "$2" ] || { echo "build.sh: $1 is $size bytes, over its slot reservation of $2" >&2; exit 1; }
    truncate -s "$2" "$1"
}
for slot in A B; do
    cp "$kernel" "$root/$slot/bzImage"
    cp "$work/initrd.img" "$root/$slot/initrd.img"
    pad "$root/$slot/bzImage" $((SLOT_KERNEL_MIB << 20))
    pad "$root/$slot/initrd.img" $((SLOT_INITRD_MIB << 20))
    # The slot's OS version, newline-padded to its fixed size.
    { printf '%s\n' "$version"; head -c $((SLOT_VERSION_BYTES - ${#version} - 1)) /dev/zero | tr '\0' '\n'; } > "$root/$slot/version"
    cat > "$root/loader/entries/nuvol-$slot.conf" <<ENTRY
title   nuvol (slot $slot)
linux   /$slot/bzImage
initrd  /$slot/initrd.img
options $CMDLINE nuvol.slot=$slot
ENTRY
done
cp "$efi_loader" "$root/EFI/BOOT/$efi_name"
printf 'default nuvol-A.conf\ntimeout 0\nconsole-mode keep\n' > "$root/loader/loader.conf"
if [ "$arch" = x86_64 ]; then
mkdir -p "$root/syslinux"
cp /usr/lib/syslinux/modules/bios/ldlinux.c32 "$root/syslinux/"
cat > "$root/syslinux/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT nuvol-A
TIMEOUT 0
PROMPT 0
LABEL nuvol-A
  KERNEL /A/bzImage
  INITRD /A/initrd.img
  APPEND $CMDLINE nuvol.slot=A
LABEL nuvol-B
  KERNEL /B/bzImage
  INITRD /B/initrd.img
  APPEND $CMDLINE nuvol.slot=B
CFG
fi
cp "$here/nuvol.toml" "$root/nuvol.toml"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

fat=$work/boot.fat
rm -f "$fat"
mkfs.vfat -C -F 16 -n NUVOL-BOOT -i "$volid" --invariant -S 512 "$fat" $((BOOT_MIB * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
# mtools stamps new directories with the current time; hide it behind the epoch.
( cd "$root" && find . -mindepth 1 -type d | sort | sed 's|^\./||' | while read -r d; do mmd -i "$fat" "::$d"; done
  find . -type f | sort | sed 's|^\./||' | while read -r f; do mcopy -m -i "$fat" "$f" "::$f"; done )
[ "$arch" != x86_64 ] || syslinux --install --directory /syslinux "$fat"

# --- data partition (ext4) --------------------------------------------------
# Empty on purpose: `mkfs.ext4 -d` would copy the source files' ctimes, which
# no one can set. PID 1 creates /data/nuvol at first boot.
data=$work/data.ext4
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L nuvol-data -U "$(uuid data-fs)" \
    -E "hash_seed=$(uuid data-hash),root_owner=0:0,lazy_itable_init=0,nodiscard" \
    -O ^metadata_csum_seed "$data" "${DATA_MIB}M" >/dev/null

# --- disk ------------------------------------------------------------------
boot_start=$BOOT_START
boot_sectors=$((BOOT_MIB * 2048))
data_start=$((boot_start + boot_sectors))
data_sectors=$((DATA_MIB * 2048))
total=$((data_start + data_sectors + 2048))
img=$work/disk.img
truncate -s $((total * 512)) "$img"
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<LAYOUT
label: gpt
label-id: $(uuid disk)
first-lba: 2048
start=$boot_start, size=$boot_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$(uuid part-boot), name=nuvol-boot$([ "$arch" != x86_64 ] || echo ', attrs="LegacyBIOSBootable"')
start=$data_start, size=$data_sectors, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$(uuid part-data), name=nuvol-data
LAYOUT
[ "$arch" != x86_64 ] || dd if=/usr/lib/syslinux/mbr/gptmbr.bin of="$img" bs=440 count=1 conv=notrunc status=none
if [ "$arch" != x86_64 ]; then
    # The hybrid MBR (see the top): entry 1 the protective 0xEE over the
    # GPT and the gap before p1, entry 2 p1 as FAT16 (LBA); CHS unused.
    python3 - "$img" "$boot_start" "$boot_sectors" <<'PY'
import struct, sys
img, start, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def entry(kind, lba, sectors):
    return struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", kind, b"\xfe\xff\xff", lba, sectors)
with open(img, "r+b") as f:
    f.seek(446)
    f.write(entry(0xEE, 1, start - 1) + entry(0x0E, start, size) + bytes(32) + b"\x55\xaa")
PY
fi
dd if="$fat" of="$img" bs=512 seek=$boot_start conv=notrunc status=none
dd if="$data" of="$img" bs=512 seek=$data_start conv=notrunc status=none

mkdir -p "$(dirname "$out")"
# The initramfs beside the kernel: `make update-artefact` signs the pair.
cp "$work/initrd.img" "$(dirname "$kernel")/initrd.img"
mv "$img" "$out.tmp" && sync -f "$out.tmp" && mv "$out.tmp" "$out"
echo "image: $out ($(( $(stat -c %s "$out") / 1048576 )) MiB, sha256 $(sha256sum "$out" | cut -c1-16))" >&2
