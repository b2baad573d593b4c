package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Listener names, as handed from one cutover process to the next during an
// upgrade (see internal/serve/upgrade.go).
const (
	NameHTTP     = "http"
	NameHTTPS    = "https"
	NameAdmin    = "admin"     // the admin Unix socket
	NameAdminTCP = "admin-tcp" // the optional admin TCP listener
	NameMetrics  = "metrics"   // the metrics listener, when one is configured
)

// Handed is one listening socket passed to a new process: its name, the
// address as the configuration wrote it (so "127.0.0.1:0" still matches
// after the port was picked) and the listener.
type Handed struct {
	Name     string
	Addr     string
	Listener net.Listener
}

// InheritedFD describes one inherited listening socket to the new process:
// the descriptor number it finds it at, and what Handed said.
type InheritedFD struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	FD   int    `json:"fd"`
}

// Files duplicates each handed listener's socket into an *os.File for
// exec.Cmd.ExtraFiles, whose i-th file the child finds at descriptor
// 3+firstExtra+i. The listeners keep serving; the caller closes the files
// once the child has started.
//
// The duplicate is made with fcntl(F_DUPFD_CLOEXEC) rather than
// (*net.TCPListener).File, which may switch the shared socket to blocking
// mode and leave this process's accept loop stuck in the kernel.
func Files(handed []Handed, firstExtra int) ([]*os.File, []InheritedFD, error) {
	files := make([]*os.File, 0, len(handed))
	desc := make([]InheritedFD, 0, len(handed))
	for _, h := range handed {
		fd, err := dupListener(h.Listener)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, fmt.Errorf("handing over the %s listener %s: %w", h.Name, h.Addr, err)
		}
		desc = append(desc, InheritedFD{Name: h.Name, Addr: h.Addr, FD: 3 + firstExtra + len(files)})
		files = append(files, os.NewFile(uintptr(fd), h.Name))
	}
	return files, desc, nil
}

func dupListener(ln net.Listener) (int, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("listener %T has no socket to hand over", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = fcntlDup(int(s))
	}); err != nil {
		return -1, err
	}
	return fd, derr
}

func fcntlDup(fd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// Inherited is the set of listening sockets a process was started with.
type Inherited struct {
	byName map[string]inherited
}

type inherited struct {
	addr string
	f    *os.File
}

// NewInherited takes the descriptors described by desc. A descriptor that
// is not an open socket is an error: the description and the files did not
// come from the same parent.
func NewInherited(desc []InheritedFD) (*Inherited, error) {
	in := &Inherited{byName: map[string]inherited{}}
	for _, d := range desc {
		var st syscall.Stat_t
		if err := syscall.Fstat(d.FD, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
			in.Close()
			return nil, fmt.Errorf("inherited %s listener: descriptor %d is not an open socket", d.Name, d.FD)
		}
		syscall.CloseOnExec(d.FD)
		in.byName[d.Name] = inherited{addr: d.Addr, f: os.NewFile(uintptr(d.FD), d.Name)}
	}
	return in, nil
}

// Take returns the inherited listener called name when it was bound for
// addr (as the configuration writes it), and nil when there is none or the
// configuration now says another address: the caller then binds addr
// afresh, and the old socket is closed by Close. A nil *Inherited has
// nothing to take.
func (in *Inherited) Take(name, addr string) (net.Listener, error) {
	if in == nil {
		return nil, nil
	}
	h, ok := in.byName[name]
	if !ok || h.addr != addr {
		return nil, nil
	}
	delete(in.byName, name)
	ln, err := net.FileListener(h.f)
	h.f.Close()
	if err != nil {
		return nil, fmt.Errorf("inherited %s listener %s: %w", name, addr, err)
	}
	return ln, nil
}

// Close closes the inherited sockets nothing took (addresses the new
// configuration no longer has).
func (in *Inherited) Close() error {
	if in == nil {
		return nil
	}
	var errs []error
	for name, h := range in.byName {
		errs = append(errs, h.f.Close())
		delete(in.byName, name)
	}
	return errors.Join(errs...)
}

// listenTCP takes the inherited listener for addr, or binds addr.
func listenTCP(in *Inherited, name, addr string) (net.Listener, error) {
	ln, err := in.Take(name, addr)
	if ln != nil || err != nil {
		return ln, err
	}
	return net.Listen("tcp", addr)
}

// Handed lists the listeners to pass to a new process.
func (s *Server) Handed() []Handed {
	var out []Handed
	if s.httpLn != nil {
		out = append(out, Handed{Name: NameHTTP, Addr: s.o.HTTP, Listener: s.httpLn})
	}
	if s.httpsLn != nil {
		out = append(out, Handed{Name: NameHTTPS, Addr: s.o.HTTPS, Listener: s.httpsLn})
	}
	return out
}
