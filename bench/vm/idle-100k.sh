#!/bin/sh
# idle-100k.sh: the idle-memory scenario at 100 000 connections on one node,
# on a machine whose open-file limit is too low for it.
#
# One node holding 100 000 connections needs 100 000 file descriptors, and the
# load generator as many: more than a container's hard limit often allows
# (20 000 here, with no CAP_SYS_RESOURCE to raise it). This script runs the
# same command, `loadgen idle-memory`, in a small qemu virtual machine whose
# limits are its own: Debian's kernel, a RAM disk with busybox and the static
# loadgen binary, nothing else. The node and the load generator run in it as
# they would on the host, and the results are printed on the serial console.
#
# Usage, from the repository's root, as root on Debian:
#
#	bench/vm/idle-100k.sh [loadgen flags]   (default: -conns 10000,50000,100000)
#
# Environment: VM_CPUS (2), VM_MEM (12G), KEEP=1 keeps the work directory,
# VM_ACCEL: tcg (the default: qemu's emulator, which runs anywhere) or kvm
# (hardware virtualization, where /dev/kvm works: in a VM that is itself
# nested it may hang before the kernel prints anything).
# It installs qemu-system-x86, cpio and busybox-static with apt-get, and
# downloads Debian's kernel package (not installed: only its vmlinuz is used).
# Under tcg, memory is measured as on the host; CPU times are the emulated
# machine's, not comparable with the host's, and dialing is slow (tens of
# minutes for 100 000).
set -eu

[ -f go.mod ] && [ -d bench/cmd/loadgen ] || { echo "idle-100k: run it from the repository's root" >&2; exit 1; }
[ $# -gt 0 ] || set -- -conns 10000,50000,100000

need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v cpio >/dev/null || need="$need cpio"
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx ip || need="$need busybox-static"
if [ -n "$need" ]; then
	apt-get install -y --no-install-recommends $need >/dev/null
fi

work=$(mktemp -d /tmp/idle-100k.XXXXXX)
chmod 777 "$work" # apt-get download writes as _apt
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$work"' EXIT

# The kernel: the image package linux-image-amd64 depends on, unpacked.
kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
[ -n "$kpkg" ] || { echo "idle-100k: no kernel package found (apt-cache depends linux-image-amd64)" >&2; exit 1; }
(cd "$work" && apt-get download "$kpkg" >/dev/null && dpkg-deb -x ./*.deb kernel)
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* | head -1)

# The RAM disk: busybox, loadgen, an init that runs it and powers off.
root="$work/root"
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for app in sh mount ip ulimit poweroff cat uname sleep grep tr sed tail dmesg; do
	ln -s busybox "$root/bin/$app"
done
CGO_ENABLED=0 go build -o "$root/bin/loadgen" ./bench/cmd/loadgen
{
	echo '#!/bin/sh'
	echo 'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp'
	echo 'ip link set lo up'
	echo 'echo 1048576 > /proc/sys/fs/nr_open'
	echo 'ulimit -n 1000000'
	echo 'echo "vm: $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs, $(grep MemTotal /proc/meminfo), open files $(ulimit -n)"'
	# The kernel's view every two minutes (sockets, TCP memory in pages
	# against tcp_mem), and its messages at the end: a limit of the guest
	# shows there.
	echo 'echo "vm: tcp_mem $(cat /proc/sys/net/ipv4/tcp_mem), somaxconn $(cat /proc/sys/net/core/somaxconn)"'
	echo '(while sleep 120; do echo "vm: $(grep -E "^(TCP|sockets):" /proc/net/sockstat | tr "\n" " ")$(grep MemAvailable /proc/meminfo)"; done) &'
	printf 'HOME=/tmp /bin/loadgen'
	for a in "$@"; do printf " '%s'" "$a"; done
	echo ' idle-memory 2>&1'
	echo 'echo "vm: loadgen exit $?"'
	echo 'dmesg | tail -20 | sed "s/^/vm: dmesg: /"'
	echo 'poweroff -f'
} > "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

case "${VM_ACCEL:-tcg}" in
kvm) accel="-enable-kvm -cpu host,-arch-capabilities" ;;
tcg) accel="-accel tcg,thread=multi -cpu max" ;;
*) echo "idle-100k: VM_ACCEL is kvm or tcg" >&2; exit 1 ;;
esac
echo "idle-100k: booting ($kpkg, ${VM_ACCEL:-tcg}, ${VM_CPUS:-2} CPUs, ${VM_MEM:-12G})" >&2
qemu-system-x86_64 $accel -smp "${VM_CPUS:-2}" -m "${VM_MEM:-12G}" \
	-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 loglevel=3 panic=-1 rdinit=/init" \
	-display none -serial stdio -monitor none -no-reboot -nic none
