#!/usr/bin/env bash
# Builds the QEMU guest for the two-guest devdax scenario: a Debian kernel and an initramfs with
# busybox, the nvdimm/dax modules, ndctl/daxctl, and gismoctl/gismo-server.
#
#   tools/qemu/build-guest.sh --bin-dir DIR [--build-dir DIR]
#
# --bin-dir    directory holding release builds of gismoctl and gismo-server
# --build-dir  where to cache the kernel and write the initramfs (default: tools/qemu/build)
#
# Installs the missing Debian packages (qemu-system-x86 busybox-static ndctl daxctl cpio kmod)
# with apt-get; downloads the kernel package named by `apt-cache depends linux-image-amd64` once
# and caches it extracted under BUILD/kernel. The initramfs is rebuilt on every call (a second or
# two) so it always carries the current binaries. Prints nothing on stdout but the paths:
#   KERNEL=...  INITRD=...
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin_dir=
build_dir=$here/build

while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --build-dir) build_dir=$2; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-guest.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$bin_dir" ] || { echo "build-guest.sh: --bin-dir is required" >&2; exit 2; }
for b in gismoctl gismo-server; do
    [ -x "$bin_dir/$b" ] || { echo "build-guest.sh: $bin_dir/$b not found (cargo build --release -p gismoctl -p gismo-server)" >&2; exit 2; }
done

log() { echo "build-guest: $*" >&2; }

# --- packages ---------------------------------------------------------------------------------
PACKAGES=(qemu-system-x86 busybox-static ndctl daxctl cpio kmod)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# --- kernel -----------------------------------------------------------------------------------
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "build-guest.sh: apt-cache depends linux-image-amd64 names no kernel" >&2; exit 1; }
kdir=$build_dir/kernel/$kpkg
if [ ! -f "$kdir/.done" ]; then
    log "downloading $kpkg"
    rm -rf "$kdir"
    mkdir -p "$kdir/deb"
    (cd "$kdir/deb" && apt-get download "$kpkg" >&2)
    dpkg-deb -x "$kdir"/deb/*.deb "$kdir/root"
    rm -rf "$kdir/deb"
    touch "$kdir/.done"
fi
kernel=$(ls "$kdir"/root/boot/vmlinuz-* | head -n1)
kver=${kernel##*/vmlinuz-}
moddir=$kdir/root/lib/modules/$kver
[ -d "$moddir" ] || { echo "build-guest.sh: no modules for $kver" >&2; exit 1; }
if [ ! -f "$moddir/modules.dep" ]; then
    depmod -b "$kdir/root" "$kver"
fi

# --- initramfs --------------------------------------------------------------------------------
root=$build_dir/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,lib/modules}

cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# Copies a binary and the libraries ldd lists (keeping their paths).
copy_with_libs() {
    local src=$1 dst=$2 lib
    install -D -m 0755 "$src" "$root$dst"
    for lib in $(ldd "$src" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
}
copy_with_libs "$(command -v ndctl)" /bin/ndctl
copy_with_libs "$(command -v daxctl)" /bin/daxctl
copy_with_libs "$(command -v cxl)" /bin/cxl
copy_with_libs "$bin_dir/gismoctl" /bin/gismoctl
copy_with_libs "$bin_dir/gismo-server" /bin/gismo-server

# Modules, with their dependencies in load order: /etc/modules for every guest; /etc/modules.cxl
# (in /lib/modules/cxl) only for the optional CXL attempt (try-cxl.sh).
ordered=()
add_module() {
    local name=$1 path dep
    path=$(modinfo -b "$kdir/root" -k "$kver" -n "$name" 2>/dev/null) || { echo "build-guest.sh: module $name not found" >&2; exit 1; }
    [ "$path" = "(builtin)" ] && return 0
    for seen in "${ordered[@]:-}"; do [ "$seen" = "$path" ] && return 0; done
    for dep in $(modinfo -b "$kdir/root" -k "$kver" -F depends "$name" | tr ',' ' '); do
        add_module "$dep"
    done
    ordered+=("$path")
}
# install_modules LIST DIR MODULE...: copies the modules (and dependencies not yet copied) into
# DIR and lists them in LIST, dependencies first.
install_modules() {
    local list=$1 dir=$2 m path base
    shift 2
    local before=${#ordered[@]}
    for m in "$@"; do add_module "$m"; done
    mkdir -p "$root$dir"
    : >"$root$list"
    for path in "${ordered[@]:$before}"; do
        base=${path##*/}
        case "$base" in
            *.ko.xz) xz -dc "$path" >"$root$dir/${base%.xz}"; base=${base%.xz} ;;
            *.ko.zst) zstd -qdc "$path" >"$root$dir/${base%.zst}"; base=${base%.zst} ;;
            *) cp "$path" "$root$dir/$base" ;;
        esac
        echo "$base" >>"$root$list"
    done
}
install_modules /etc/modules /lib/modules libnvdimm nd_btt nd_pmem nfit device_dax dax_pmem
install_modules /etc/modules.cxl /lib/modules/cxl cxl_acpi cxl_pci cxl_mem cxl_pmem

install -m 0755 "$here/guest/init" "$root/init"
install -m 0755 "$here/guest/scenario.sh" "$root/bin/scenario.sh"
install -m 0755 "$here/guest/cxl.sh" "$root/bin/cxl.sh"
install -m 0755 "$here/guest/atomics.sh" "$root/bin/atomics.sh"
# The atomics probe (atomics-probe.sh), when a C compiler with a static libc is there.
if command -v cc >/dev/null && cc -O2 -static -o "$root/bin/atomic-probe" "$here/guest/atomic-probe.c" 2>/dev/null; then
    :
else
    log "no static C toolchain: the initramfs has no atomic-probe (only atomics-probe.sh needs it)"
fi

initrd=$build_dir/initrd.img
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$initrd")
log "initramfs: $(du -h "$initrd" | cut -f1), modules: $(tr '\n' ' ' <"$root/etc/modules")(cxl: $(tr '\n' ' ' <"$root/etc/modules.cxl"))"
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
