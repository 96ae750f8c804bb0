package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Errorf("without NOTIFY_SOCKET: sent %v, %v", sent, err)
	}
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@opencen-sdnotify-test-" + strconv.Itoa(os.Getpid())} {
		addr := name
		if addr[0] == '@' {
			addr = "\x00" + addr[1:]
		}
		ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", name)
		for _, state := range []string{Ready, Watchdog} {
			if sent, err := Notify(state); !sent || err != nil {
				t.Fatalf("%s: sent %v, %v", name, sent, err)
			}
			buf := make([]byte, 64)
			ln.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := ln.Read(buf)
			if err != nil || string(buf[:n]) != state {
				t.Errorf("%s: got %q, %v; want %q", name, buf[:n], err, state)
			}
		}
		ln.Close()
	}
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if _, err := Notify(Ready); err == nil {
		t.Error("a relative NOTIFY_SOCKET was accepted")
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		on, err   bool
	}{
		{"", "", 0, false, false},
		{"20000000", "", 10 * time.Second, true, false},
		{"20000000", strconv.Itoa(os.Getpid()), 10 * time.Second, true, false},
		{"20000000", "1", 0, false, false},
		{"ten", "", 0, false, true},
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		got, on, err := WatchdogInterval()
		if got != c.want || on != c.on || (err != nil) != c.err {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v %v %v", c.usec, c.pid, got, on, err)
		}
	}
}
