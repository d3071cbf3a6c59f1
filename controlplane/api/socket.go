package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrSocketInUse is returned by Listen when another process answers on the
// socket: a second daemon must not take the first one's API away.
var ErrSocketInUse = errors.New("socket in use by a running natwall")

// Socket file and directory modes: root only.
const (
	SocketMode    fs.FileMode = 0o600
	SocketDirMode fs.FileMode = 0o700
)

// maxSocketPath is what fits in sockaddr_un.sun_path with its NUL.
const maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1

// ValidSocketPath checks a socket path before anything is bound.
func ValidSocketPath(path string) error {
	switch {
	case !filepath.IsAbs(path):
		return errors.New("must be an absolute path")
	case len(path) > maxSocketPath:
		return fmt.Errorf("is %d bytes, longer than the %d a unix socket path can have", len(path), maxSocketPath)
	}
	return nil
}

// Listen binds the API socket at path, mode 0600, creating its directory
// with mode 0700 if it is missing (an existing directory is left as it
// is). A socket left by a daemon that died is replaced; one that answers
// is ErrSocketInUse; any other file there is an error. The socket is
// removed when the listener is closed. Only connections from root or the
// daemon's own user are accepted.
func Listen(path string) (net.Listener, error) {
	if err := ValidSocketPath(path); err != nil {
		return nil, fmt.Errorf("api socket %q %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, SocketDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create api socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// The umask makes the socket 0600 from the moment it exists; the
	// chmod after is for a umask some other thread changed meanwhile.
	// Binding happens at start, before the daemon creates other files.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen for api on %s: %w", path, err)
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod api socket: %w", err)
	}
	return &peerCheckListener{UnixListener: ln, uid: uint32(os.Geteuid())}, nil
}

// removeStale removes a socket at path that no process answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("api socket %s exists and is not a socket: remove it or set api.socket", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("api socket %s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api socket %s: cannot tell whether a natwall serves it: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale api socket: %w", err)
	}
	return nil
}

// peerCheckListener closes connections from users other than root and
// the daemon's own, whatever the socket's mode has become.
type peerCheckListener struct {
	*net.UnixListener
	uid uint32
}

func (l *peerCheckListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(conn)
		if err == nil && (uid == 0 || uid == l.uid) {
			return conn, nil
		}
		conn.Close()
	}
}

func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}

// shutdownTimeout bounds how long requests in flight may delay the stop.
const shutdownTimeout = 5 * time.Second

// Serve serves h on ln until ctx is done, then shuts down and closes ln,
// which removes the socket. Requests see ctx cancelled at the stop, which
// ends flow streams. It returns nil after a stop, or why serving failed.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// No write timeout: a flow stream lasts as long as its client.
		IdleTimeout:    60 * time.Second,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return ctx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve api on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		err = errors.Join(fmt.Errorf("shut down api: %w", err), srv.Close())
	}
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serve api: %w", serveErr))
	}
	return err
}
