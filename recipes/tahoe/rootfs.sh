# Tahoe-LAFS: Debian bookworm's CPython 3.11 (interpreter, standard library,
# the shared libraries its modules need), python3-netifaces from Debian, and
# the pinned wheels of requirements-$BUNDLE_ARCH.txt (recipes/lib.sh
# pip_install). tahoe-grid.py runs a grid member (introducer where the
# grid is formed, storage node with its web gateway) in the data volume.
PY_DEB_VERSION=3.11.2-6+deb12u9
for p in "python3.11-minimal=$PY_DEB_VERSION" "libpython3.11-minimal=$PY_DEB_VERSION" \
    "libpython3.11-stdlib=$PY_DEB_VERSION" "libc6=$LIBC6_VERSION" "zlib1g=1:1.2.13.dfsg-1+deb12u1" \
    "libexpat1=2.5.0-1+deb12u5" "libffi8=3.4.4-1" "libssl3=3.0.22-1~deb12u2" "libbz2-1.0=1.0.8-5+b1" \
    "liblzma5=5.4.1-1+deb12u2" "libsqlite3-0=3.40.1-2+deb12u2" "libuuid1=2.38.1-5+deb12u3" \
    "libcrypt1=1:4.4.33-2" "libgcc-s1=12.2.0-14+deb12u1" "python3-netifaces=0.11.0-2+b1" "media-types=10.0.0" \
    "python3-zfec=1.5.2-2.1+b7"; do
    extract_deb "$p" "$WORK/deb"
done
D="$WORK/deb"
PYLIB=/usr/lib/python3.11
SITE=/usr/lib/python3/dist-packages
mkdir -p "$ROOTFS/usr/bin" "$ROOTFS/usr/lib" "$ROOTFS$SITE" "$ROOTFS/etc" "$ROOTFS/var/lib/tahoe" "$ROOTFS/usr/lib/tahoe"
cp "$D/usr/bin/python3.11" "$ROOTFS/usr/bin/python3.11"
ln -s python3.11 "$ROOTFS/usr/bin/python3"
cp -a "$D$PYLIB" "$ROOTFS$PYLIB"
# What a service never imports: tests, the IDE, Tk, 2to3, pip's bootstrap,
# the demo; and the modules whose libraries are left out (readline and
# curses: terminals; dbm: Berkeley DB and gdbm; nis: NIS).
(cd "$ROOTFS$PYLIB" && rm -rf test idlelib tkinter turtledemo turtle.py lib2to3 ensurepip pydoc_data \
    sqlite3/test ctypes/test distutils/tests unittest/test \
    lib-dynload/readline.* lib-dynload/_curses* lib-dynload/_dbm.* lib-dynload/_gdbm.* lib-dynload/nis.*)
cp "$D/etc/mime.types" "$ROOTFS/etc/mime.types"
copy_needed "$ROOTFS/usr/bin/python3.11" "$ROOTFS" "$D"
for so in "$ROOTFS$PYLIB"/lib-dynload/*.so "$D$SITE"/netifaces*.so "$D$SITE"/zfec/*.so; do
    copy_needed "$so" "$ROOTFS" "$D"
done
cp "$D$SITE"/netifaces*.so "$ROOTFS$SITE/"
# zfec from Debian, not PyPI: the manylinux wheel's erasure coder uses
# SSE4.1 (SIGILL on an Atom N2600, and on QEMU's qemu64 CPU, as soon as a
# file is cut into more than one share); Debian's is built for the amd64
# baseline.
cp -a "$D$SITE"/zfec "$D$SITE"/zfec-*info "$ROOTFS$SITE/"
pip_install "$RECIPE_DIR/requirements-$BUNDLE_ARCH.txt" "$ROOTFS$SITE"
# pyutil's wheel carries a stray build/ and venv/ (11 MB), txtorcon's its
# docs in share/; and the libraries' tests (Tahoe's own are 20 MB): no
# running node imports them.
rm -rf "$ROOTFS$SITE/build" "$ROOTFS$SITE/venv" "$ROOTFS$SITE/share"
find "$ROOTFS$SITE" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
# The wheels' extension modules need libgcc_s (Rust's unwinder) besides glibc.
copy_needed_tree "$ROOTFS" "$SITE" "$D"
cp "$RECIPE_DIR/tahoe-grid.py" "$ROOTFS/usr/lib/tahoe/tahoe-grid.py"
pyc_compile "$ROOTFS" /usr/bin/python3.11 "$PYLIB" "$SITE" /usr/lib/tahoe
base_files "$ROOTFS" 1002 1002 tahoe
