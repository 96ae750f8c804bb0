// Package sdnotify speaks systemd's notify protocol (sd_notify(3)): a
// service of Type=notify says READY=1 once it serves, and WATCHDOG=1 at
// least every WatchdogSec while it is healthy. It is a datagram to the
// unix socket in $NOTIFY_SOCKET; without one (not under systemd) every
// call does nothing.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The states cend sends.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
)

// Notify sends state to the service manager. It reports false, and no
// error, when there is none to tell.
func Notify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	if strings.HasPrefix(path, "@") { // an abstract socket
		path = "\x00" + path[1:]
	} else if !strings.HasPrefix(path, "/") {
		return false, fmt.Errorf("NOTIFY_SOCKET %q is neither a path nor an abstract socket", path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify systemd: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify systemd: %w", err)
	}
	return true, nil
}

// WatchdogInterval is how often to send WATCHDOG=1: half the unit's
// WatchdogSec, as sd_watchdog_enabled(3) advises. It reports false when
// the watchdog is off or meant for another process.
func WatchdogInterval() (time.Duration, bool, error) {
	usec := os.Getenv("WATCHDOG_USEC")
	if usec == "" {
		return 0, false, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || n == 0 {
		return 0, false, errors.Join(fmt.Errorf("WATCHDOG_USEC %q is not a positive number of microseconds", usec), err)
	}
	return time.Duration(n) * time.Microsecond / 2, true, nil
}
