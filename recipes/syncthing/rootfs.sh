# Syncthing from Debian (dynamically linked Go binary + glibc from libc6).
extract_deb "syncthing=1.19.2~ds1-1+b4" "$WORK/st"
extract_deb "libc6=$LIBC6_VERSION" "$WORK/libc"
mkdir -p "$ROOTFS/usr/bin" "$ROOTFS/var/lib/syncthing"
cp "$WORK/st/usr/bin/syncthing" "$ROOTFS/usr/bin/syncthing"
copy_needed "$ROOTFS/usr/bin/syncthing" "$ROOTFS" "$WORK/libc"
base_files "$ROOTFS" 1000 1000 syncthing
ca_bundle "$ROOTFS"
