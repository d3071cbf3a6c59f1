package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "natwall.sock")
	// A umask that would leave the socket open to everyone must not.
	old := syscall.Umask(0)
	ln, err := Listen(path)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != SocketMode {
		t.Errorf("socket mode %v, want socket %v", fi.Mode(), SocketMode)
	}
	di, err := os.Stat(dir)
	if err != nil || di.Mode().Perm() != SocketDirMode {
		t.Errorf("socket directory mode %v (%v), want %v", di.Mode(), err, SocketDirMode)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "natwall.sock")
	// A daemon that died left its socket behind.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the stale socket is not there: %v", err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	conn.Close()
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "natwall.sock")
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if second, err := Listen(path); !errors.Is(err, ErrSocketInUse) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Listen = %v, want ErrSocketInUse", err)
	}
	// The first daemon still serves.
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the first socket is gone after the refused start: %v", err)
	}
	conn.Close()
}

func TestListenRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "natwall.sock")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file = %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Errorf("the regular file was touched: %q, %v", b, err)
	}
	// A symlink to a live socket is not followed, nor removed.
	live := filepath.Join(dir, "live.sock")
	ln, err := Listen(live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(live, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(link); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a symlink = %v", err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode().Type() != os.ModeSymlink {
		t.Errorf("the symlink was touched: %v", err)
	}
	for _, path := range []string{"natwall.sock", "/" + strings.Repeat("x", maxSocketPath)} {
		if _, err := Listen(path); err == nil {
			t.Errorf("Listen(%q) succeeded", path)
		}
	}
}

// peerProbeEnv makes the test binary dial a socket and report whether the
// server answered, as a child running as another user.
const peerProbeEnv = "NATWALL_API_TEST_PEER_PROBE"

func TestMain(m *testing.M) {
	if path := os.Getenv(peerProbeEnv); path != "" {
		os.Exit(probe(path))
	}
	os.Exit(m.Run())
}

// probe exits 0 if the daemon at path answered a request, 3 if the
// connection was refused by the kernel (mode), 4 if the server closed it.
func probe(path string) int {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return 3
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: natwall\r\n\r\n")); err != nil {
		return 4
	}
	buf := make([]byte, 16)
	if n, _ := conn.Read(buf); n == 0 {
		return 4
	}
	return 0
}

func TestSocketRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root to run a probe as another user, and CI is set")
		}
		t.Skip("needs root")
	}
	// A directory another user can traverse, holding a copy of this test
	// binary it can run; the socket's own directory is the daemon's.
	top, err := os.MkdirTemp("", fmt.Sprintf("natwall-api-test-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(top, "probe")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &daemonState{}
	_, path := serveAt(t, filepath.Join(top, "run", "natwall.sock"), d.providers())
	run := func(uid uint32) int {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), peerProbeEnv+"="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: 65534}}
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	if code := run(0); code != 0 {
		t.Fatalf("root's probe = %d, want an answer", code)
	}
	if code := run(65534); code != 3 {
		t.Errorf("nobody's probe through the 0700 directory = %d, want the kernel's refusal (3)", code)
	}
	// Open the directory: the 0600 socket still refuses.
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if code := run(65534); code != 3 {
		t.Errorf("nobody's probe of the 0600 socket = %d, want the kernel's refusal (3)", code)
	}
	// Open the socket too: the server's peer check is what is left.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if code := run(65534); code != 4 {
		t.Errorf("nobody's probe of a socket made 0666 = %d, want the server to close it (4)", code)
	}
}
