// Package capx tells which Linux capabilities the process holds, so that
// cend can ask for what it needs by capability rather than by uid 0: the
// systemd unit runs it with a bounded set.
package capx

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Cap is one capability, as unix.CAP_* numbers it.
type Cap int

// The capabilities cend uses.
const (
	NetBindService Cap = unix.CAP_NET_BIND_SERVICE
	NetAdmin       Cap = unix.CAP_NET_ADMIN
	NetRaw         Cap = unix.CAP_NET_RAW
	SysAdmin       Cap = unix.CAP_SYS_ADMIN
	Perfmon        Cap = unix.CAP_PERFMON
	BPF            Cap = unix.CAP_BPF
)

var names = map[Cap]string{
	NetBindService: "CAP_NET_BIND_SERVICE", NetAdmin: "CAP_NET_ADMIN", NetRaw: "CAP_NET_RAW",
	SysAdmin: "CAP_SYS_ADMIN", Perfmon: "CAP_PERFMON", BPF: "CAP_BPF",
}

func (c Cap) String() string {
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("capability %d", int(c))
}

// Set is a capability set as the kernel reports it, one bit per Cap.
type Set uint64

// Has reports whether s holds c.
func (s Set) Has(c Cap) bool { return s&(1<<uint(c)) != 0 }

// Missing lists those of want that s lacks.
func (s Set) Missing(want ...Cap) []Cap {
	var out []Cap
	for _, c := range want {
		if !s.Has(c) {
			out = append(out, c)
		}
	}
	return out
}

// Effective is the calling thread's effective capability set.
func Effective() (Set, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return Set(uint64(data[1].Effective)<<32 | uint64(data[0].Effective)), nil
}

// Join names caps, comma-separated.
func Join(caps []Cap) string {
	s := make([]string, len(caps))
	for i, c := range caps {
		s[i] = c.String()
	}
	return strings.Join(s, ", ")
}
