package dataplane

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// HelperLogMax bounds the userspace WireGuard helper's log, StateDir/
// DEVICE.log: past it, the log moves to DEVICE.log.1 (replacing the one
// there) and a new one starts, so the two hold at most twice this.
const HelperLogMax = 1 << 20

// CappedLog is what a helper writes its log through, given its stderr,
// which the dataplane points at the log file. Past max bytes it moves the
// file to FILE.1 and opens a new FILE onto the same descriptor (dup3), so
// whatever else writes to stderr (a Go runtime panic) lands in the new
// file too. A stderr that is not a regular file (a terminal) is written
// as it is.
func CappedLog(stderr *os.File, max int64) io.Writer {
	fi, err := stderr.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return stderr
	}
	return &cappedLog{f: stderr, max: max, size: fi.Size()}
}

type cappedLog struct {
	mu   sync.Mutex
	f    *os.File
	max  int64
	size int64
}

func (c *cappedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.size > 0 && c.size+int64(len(p)) > c.max {
		if err := c.rotate(); err != nil {
			// Never lose the line for want of a rotation: start the file
			// over instead.
			_ = c.f.Truncate(0)
		}
		c.size = 0
	}
	n, err := c.f.Write(p)
	c.size += int64(n)
	return n, err
}

// rotate moves the file stderr writes to aside and points stderr at a new
// one in its place.
func (c *cappedLog) rotate() error {
	fd := int(c.f.Fd())
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return err
	}
	if err := os.Rename(path, path+".1"); err != nil {
		return err
	}
	nf, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer nf.Close()
	return unix.Dup3(int(nf.Fd()), fd, 0)
}
