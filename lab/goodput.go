package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencen/opencen/internal/iperf3"
)

// MinGoodputRatio is the least share of its allocation a shaped pair's TCP
// goodput must reach: TCP's headers and acknowledgements are charged to
// the allocation but are not goodput, so a perfect shaper stays under 1.
const MinGoodputRatio = 0.95

// IperfOptions shape one Goodput measurement.
type IperfOptions struct {
	Port    string // default 5201
	Seconds int
	Streams int // parallel TCP flows
	Omit    int // leading seconds left out (slow start); 0 counts them
	// Congestion is the sender's TCP congestion control; default cubic,
	// Linux's default, whatever the host's own default is: a host may
	// default to bbr, whose ProbeRTT phase stops sending for about 200 ms
	// every 10 s, and against a shaper's shallow queue that costs goodput
	// and measures BBR, not the shaper.
	Congestion string
	// IPv6 measures between the hosts' IPv6 addresses (iperf3 -6)
	// instead of their IPv4 ones.
	IPv6 bool
}

// Goodput measures TCP goodput in bits per second from one host to another
// with iperf3 (a one-off server on the receiver, stopped afterwards),
// between their addresses of the family o asks for.
func (l *Lab) Goodput(ctx context.Context, from, to string, o IperfOptions) (float64, error) {
	if o.Port == "" {
		o.Port = "5201"
	}
	if o.Congestion == "" {
		o.Congestion = "cubic"
	}
	dst, ok := l.Host(to)
	if !ok {
		return 0, fmt.Errorf("no host %q in the lab", to)
	}
	addr, family := dst.Primary(o.IPv6), "-4"
	if o.IPv6 {
		family = "-6"
	}
	if !addr.IsValid() {
		return 0, fmt.Errorf("iperf3 %s -> %s: %s has no %s address", from, to, to, familyName(o.IPv6))
	}
	srv, err := l.Command(ctx, to, "iperf3", "-s", "-1", "-p", o.Port)
	if err != nil {
		return 0, err
	}
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("start iperf3 server: %w", err)
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			srv.Process.Kill()
		}
	}()
	var res iperf3.Result
	var out []byte
	// The server needs a moment to listen; iperf3 -J may exit 0 on a
	// refused connection, so the verdict is in its JSON.
	start := time.Now()
	for try := 0; try < 50 && time.Since(start) < 5*time.Second; try++ {
		cctx, cancel := context.WithTimeout(ctx, time.Duration(o.Seconds+o.Omit+15)*time.Second)
		out, err = l.Exec(cctx, from, "iperf3", family, "-c", addr.String(), "-p", o.Port,
			"-t", strconv.Itoa(o.Seconds), "-O", strconv.Itoa(o.Omit), "-P", strconv.Itoa(max(o.Streams, 1)),
			"-C", o.Congestion, "-J", "--connect-timeout", "2000")
		cancel()
		res.Error = ""
		if json.Unmarshal(out, &res) == nil && !strings.Contains(res.Error, "unable to connect") && !strings.Contains(res.Error, "busy") {
			break
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return 0, fmt.Errorf("iperf3 %s -> %s: %v: %s", from, to, err, firstLine(out))
	}
	if res.Error != "" {
		return res.End.SumReceived.BitsPerSecond, fmt.Errorf("iperf3 %s -> %s: %s", from, to, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
