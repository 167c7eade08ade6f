# etcd from Debian's etcd-server (dynamically linked Go binary + glibc).
extract_deb "etcd-server=3.4.23-4+b4" "$WORK/etcd"
extract_deb "libc6=$LIBC6_VERSION" "$WORK/libc"
mkdir -p "$ROOTFS/usr/bin" "$ROOTFS/var/lib/etcd"
cp "$WORK/etcd/usr/bin/etcd" "$ROOTFS/usr/bin/etcd"
copy_needed "$ROOTFS/usr/bin/etcd" "$ROOTFS" "$WORK/libc"
base_files "$ROOTFS" 1001 1001 etcd
