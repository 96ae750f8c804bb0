// Package procx reads what opencen needs to know about other processes
// from /proc.
package procx

import (
	"bytes"
	"os"
	"strconv"
)

// Alive reports whether pid names a running process. A missing process
// is not alive, and neither is a zombie or a dead one (state Z or X):
// it has exited and only waits to be reaped, so it serves nothing and
// holds no namespace open.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and
	// may itself hold spaces and parentheses: the last ')' ends it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}
