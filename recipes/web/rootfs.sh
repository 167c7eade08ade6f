# Static web page server: busybox httpd from Debian's busybox-static
# (one static binary, no libraries) serving /www.
extract_deb "busybox-static=1:1.35.0-4+deb12u1+b1" "$WORK/bb"
mkdir -p "$ROOTFS/bin" "$ROOTFS/www"
cp "$WORK/bb/bin/busybox" "$ROOTFS/bin/busybox"
cp "$RECIPE_DIR/index.html" "$ROOTFS/www/index.html"
base_files "$ROOTFS" 101 101 www
