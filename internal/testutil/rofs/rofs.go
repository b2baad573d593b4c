// Package rofs makes a folder unwritable for a test, the way a full or
// read-only disk looks to cutover: nothing can be created in it, renamed
// into it or removed from it. As an ordinary user a mode of 0500 does it;
// root ignores modes, so for root the folder gets the immutable attribute
// (FS_IMMUTABLE_FL, what chattr +i sets), which binds root too.
package rofs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"
)

// ioctl numbers and flag of linux/fs.h; the kernel reads the flags as an
// int.
const (
	fsIocGetFlags = 0x80086601
	fsIocSetFlags = 0x40086602
	fsImmutableFl = 0x00000010
)

// Make makes dir unwritable until the test ends (or Undo is called). The
// test is skipped when this file system cannot make it so.
func Make(t testing.TB, dir string) (undo func()) {
	t.Helper()
	var restore func() error
	if os.Geteuid() != 0 {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		restore = func() error { return os.Chmod(dir, fi.Mode().Perm()) }
	} else {
		if err := setImmutable(dir, true); err != nil {
			t.Skipf("cannot make %s unwritable for root (immutable attribute: %v)", dir, err)
		}
		restore = func() error { return setImmutable(dir, false) }
	}
	done := false
	undo = func() {
		if done {
			return
		}
		done = true
		if err := restore(); err != nil {
			t.Errorf("make %s writable again: %v", dir, err)
		}
	}
	t.Cleanup(undo)
	probe := filepath.Join(dir, ".rofs-probe")
	if f, err := os.Create(probe); err == nil {
		f.Close()
		os.Remove(probe)
		undo()
		t.Skipf("%s is still writable after making it read-only", dir)
	}
	return undo
}

func setImmutable(dir string, on bool) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	var flags int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocGetFlags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		return e
	}
	if on {
		flags |= fsImmutableFl
	} else {
		flags &^= fsImmutableFl
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocSetFlags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		return e
	}
	return nil
}
