package lab

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value from linux/ethtool.h.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ethtoolIfreq is struct ifreq with ifr_data set: a name and, in the union
// that pads the struct to 40 bytes, a pointer to the ethtool command.
type ethtoolIfreq struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

// setGRO switches generic receive offload of the interface called name on or
// off, and checks that the kernel kept it that way. It must run inside the
// interface's namespace (in NetNS.Do): the ioctl acts on the namespace of its
// socket.
func setGRO(name string, on bool) error {
	want := uint32(0)
	if on {
		want = 1
	}
	if err := ethtoolValueIoctl(name, &ethtoolValue{cmd: unix.ETHTOOL_SGRO, data: want}); err != nil {
		return fmt.Errorf("set GRO of %s to %d: %w", name, want, err)
	}
	// A feature the device or a dependency refuses is quietly left off, so
	// read it back.
	got := ethtoolValue{cmd: unix.ETHTOOL_GGRO}
	if err := ethtoolValueIoctl(name, &got); err != nil {
		return fmt.Errorf("read GRO of %s: %w", name, err)
	}
	if got.data != want {
		return fmt.Errorf("GRO of %s is %d after setting it to %d", name, got.data, want)
	}
	return nil
}

func ethtoolValueIoctl(name string, value *ethtoolValue) error {
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for ethtool: %w", err)
	}
	defer unix.Close(fd)

	ifr := ethtoolIfreq{data: unsafe.Pointer(value)}
	copy(ifr.name[:], name)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(value)
	if errno != 0 {
		return errno
	}
	return nil
}
