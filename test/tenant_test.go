package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencen/opencen/internal/testutil"
	"github.com/opencen/opencen/lab"
	"golang.org/x/sys/unix"
)

// tenantFlow is a flow a tenant sends across the CEN: TCP (as fast as TCP
// goes) or UDP (a 1200-byte datagram every 5 ms, 1.9 Mbit/s), to port,
// from srcPort (0: any).
type tenantFlow struct {
	proto         string // "tcp" or "udp"
	port, srcPort int
}

func (f tenantFlow) String() string {
	return fmt.Sprintf("%s %d->%d", f.proto, f.srcPort, f.port)
}

// controlPortFlows are TCP and UDP flows on the ports of the gateways' own
// protocols (BGP, BFD single-hop, multi-hop and the agents' own, VXLAN,
// WireGuard), each as both source and destination port.
func controlPortFlows() []tenantFlow {
	var out []tenantFlow
	for _, port := range []int{179, 3784, 3785, 4784, 4789, 51820} {
		out = append(out, tenantFlow{"tcp", port, port}, tenantFlow{"udp", port, port})
	}
	return out
}

// inHost runs fn in a lab host's network namespace: sockets it opens
// belong there.
func inHost(l *lab.Lab, host string, fn func() error) error {
	name, err := l.Namespace(host)
	if err != nil {
		return err
	}
	return testutil.InNetNS(name, fn)
}

// tenantTraffic sends every flow at once from one lab host to another for
// d, and returns what each delivered, in bits/s, over d less its first
// second: a full bucket lets the start of a flow through (at most its
// burst, and in the kernel one oversize GSO packet), the rest is the
// shaper's steady state. Every socket is closed and every goroutine done
// when it returns.
func tenantTraffic(l *lab.Lab, from, to string, flows []tenantFlow, d time.Duration) (map[tenantFlow]float64, error) {
	h, ok := l.Host(to)
	if !ok {
		return nil, fmt.Errorf("no host %s", to)
	}
	dst := h.Address.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	var closers []func() error
	defer func() {
		cancel()
		for _, c := range closers {
			c()
		}
		wg.Wait()
	}()
	counts := make([]atomic.Int64, len(flows))
	for i, f := range flows {
		c, err := receive(l, to, dst, f, &counts[i], &wg)
		if err != nil {
			return nil, fmt.Errorf("receiver %s in %s: %w", f, to, err)
		}
		closers = append(closers, c)
	}
	for _, f := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			send(ctx, l, from, dst, f)
		}()
	}
	start := time.Now()
	time.Sleep(time.Second)
	base := make([]int64, len(flows))
	for i := range flows {
		base[i] = counts[i].Load()
	}
	<-ctx.Done()
	secs := time.Since(start).Seconds() - 1
	out := map[tenantFlow]float64{}
	for i, f := range flows {
		out[f] = float64(counts[i].Load()-base[i]) * 8 / secs
	}
	return out, nil
}

// receive listens for f on addr in host and counts what arrives; the
// returned function closes the listener (and so its connections).
func receive(l *lab.Lab, host string, addr netip.Addr, f tenantFlow, n *atomic.Int64, wg *sync.WaitGroup) (func() error, error) {
	ap := netip.AddrPortFrom(addr, uint16(f.port)).String()
	var tl net.Listener
	var ul net.PacketConn
	// SO_REUSEPORT: two calls at once may receive on the same port of a
	// host (flows into it from two others), each with a listener of its
	// own; the kernel spreads the flows between them.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	err := inHost(l, host, func() (err error) {
		if f.proto == "tcp" {
			tl, err = lc.Listen(context.Background(), "tcp", ap)
		} else {
			ul, err = lc.ListenPacket(context.Background(), "udp", ap)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	wg.Add(1)
	if ul != nil {
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				k, _, err := ul.ReadFrom(buf)
				if err != nil {
					return
				}
				n.Add(int64(k))
			}
		}()
		return ul.Close, nil
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		defer wg.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				for {
					k, err := c.Read(buf)
					n.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return func() error {
		err := tl.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		return err
	}, nil
}

// send sends f from host to addr until ctx is done. A TCP flow that cannot
// even connect across its pair's bucket delivers nothing, which is what
// the bucket is for.
func send(ctx context.Context, l *lab.Lab, host string, addr netip.Addr, f tenantFlow) {
	deadline, _ := ctx.Deadline()
	var c net.Conn
	err := inHost(l, host, func() (err error) {
		d := net.Dialer{Deadline: deadline}
		if f.proto == "tcp" {
			d.LocalAddr = &net.TCPAddr{Port: f.srcPort}
		} else {
			d.LocalAddr = &net.UDPAddr{Port: f.srcPort}
		}
		c, err = d.DialContext(ctx, f.proto, netip.AddrPortFrom(addr, uint16(f.port)).String())
		return err
	})
	if err != nil {
		return
	}
	defer c.Close()
	c.SetWriteDeadline(deadline)
	buf := make([]byte, 32<<10)
	if f.proto == "udp" {
		buf = buf[:1200]
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		if _, err := c.Write(buf); err != nil && f.proto == "tcp" {
			return
		}
		if f.proto == "udp" {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	}
}
