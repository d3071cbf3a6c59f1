package lab

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The lab loads its one tiny XDP program with the bpf(2) system call itself:
// cilium/ebpf belongs to natwall's dataplane package, and this program is
// part of the wiring, not of natwall.

// bpfInsn is struct bpf_insn from linux/bpf.h.
type bpfInsn struct {
	code uint8
	regs uint8 // destination register in the low nibble, source in the high one
	off  int16
	imm  int32
}

// Instruction encodings (linux/bpf_common.h, linux/bpf.h).
const (
	bpfMovImm64 = 0x07 | 0xb0 // BPF_ALU64 | BPF_MOV | BPF_K
	bpfExit     = 0x05 | 0x90 // BPF_JMP | BPF_EXIT
)

// XDP verdicts (enum xdp_action).
const (
	xdpPass = 2
	xdpTX   = 3
)

func movImm(reg uint8, imm int32) bpfInsn { return bpfInsn{code: bpfMovImm64, regs: reg, imm: imm} }

func exit() bpfInsn { return bpfInsn{code: bpfExit} }

// xdpPassProgram lets every frame through.
var xdpPassProgram = []bpfInsn{movImm(0, xdpPass), exit()}

// bpfProgLoadAttr is the BPF_PROG_LOAD part of union bpf_attr, up to
// expected_attach_type; the kernel takes the fields after it as zero.
type bpfProgLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	logLevel           uint32
	logSize            uint32
	logBuf             uint64
	kernVersion        uint32
	progFlags          uint32
	progName           [unix.BPF_OBJ_NAME_LEN]byte
	progIfindex        uint32
	expectedAttachType uint32
}

// loadXDP loads an XDP program and returns its file descriptor. The program
// declares that it handles multi-buffer frames (BPF_F_XDP_HAS_FRAGS): on a veth
// that is what lifts the MTU limit an XDP program otherwise imposes on the
// peer, about 3.5 KB.
func loadXDP(name string, insns []bpfInsn) (int, error) {
	license := []byte("GPL\x00")
	log := make([]byte, 64<<10)
	attr := bpfProgLoadAttr{
		progType:           unix.BPF_PROG_TYPE_XDP,
		insnCnt:            uint32(len(insns)),
		insns:              uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:            uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel:           1,
		logSize:            uint32(len(log)),
		logBuf:             uint64(uintptr(unsafe.Pointer(&log[0]))),
		progFlags:          unix.BPF_F_XDP_HAS_FRAGS,
		expectedAttachType: unix.BPF_XDP,
	}
	copy(attr.progName[:unix.BPF_OBJ_NAME_LEN-1], name)

	var fd uintptr
	var errno unix.Errno
	// EAGAIN: the verifier was interrupted; it is worth another try.
	for range 5 {
		fd, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno != unix.EAGAIN {
			break
		}
	}
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if errno != 0 {
		if n := cString(log); n > 0 {
			return -1, fmt.Errorf("load XDP program %s: %w: verifier: %s", name, errno, log[:n])
		}
		return -1, fmt.Errorf("load XDP program %s: %w", name, errno)
	}
	return int(fd), nil
}

func cString(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// attachXDP loads insns and attaches them in native mode to the interface
// called ifname in ns, replacing any program there. The attachment lasts as
// long as the interface.
func attachXDP(ns *NetNS, ifname, progName string, insns []bpfInsn) error {
	fd, err := loadXDP(progName, insns)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	err = ns.Do(func() error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(link, fd, nl.XDP_FLAGS_DRV_MODE)
	})
	if err != nil {
		return fmt.Errorf("attach XDP program %s to %s in %s: %w", progName, ifname, ns, err)
	}
	return nil
}
