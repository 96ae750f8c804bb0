package shaping

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// pipeTUN is a tun.Device whose packets come from a pipe (each behind a
// 2-byte length): its File takes read deadlines as a TUN's does.
type pipeTUN struct {
	r, w *os.File
}

func newPipeTUN(t *testing.T) *pipeTUN {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeTUN{r: r, w: w}
	t.Cleanup(func() { p.Close() })
	return p
}

func (p *pipeTUN) send(t *testing.T, pk pkt) {
	t.Helper()
	b := pk.ip()
	if _, err := p.w.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
		t.Fatal(err)
	}
}

func (p *pipeTUN) File() *os.File { return p.r }

func (p *pipeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var n [2]byte
	if _, err := io.ReadFull(p.r, n[:]); err != nil {
		return 0, err
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(p.r, bufs[0][offset:offset+size]); err != nil {
		return 0, err
	}
	sizes[0] = size
	return 1, nil
}

func (p *pipeTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (p *pipeTUN) MTU() (int, error)                            { return 1500, nil }
func (p *pipeTUN) Name() (string, error)                        { return "pipe", nil }
func (p *pipeTUN) Events() <-chan tun.Event                     { return nil }
func (p *pipeTUN) BatchSize() int                               { return 1 }
func (p *pipeTUN) Close() error                                 { return errors.Join(p.r.Close(), p.w.Close()) }

// read is one packet as WireGuard got it from TUN.Read.
type read struct {
	at   time.Duration // since the reads began
	dst  netip.Addr
	size int
}

// readAll reads from t what it hands over until want packets came or the
// time is up; packets of size 0 (dropped or queued) are not counted.
func readAll(t *testing.T, tn *TUN, want int, limit time.Duration) []read {
	t.Helper()
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	start := time.Now()
	var out []read
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(out) < want {
			n, err := tn.Read(bufs, sizes, 16)
			if err != nil {
				return
			}
			for i := 0; i < n; i++ {
				if sizes[i] > 0 {
					_, dst, _ := parseIP(bufs[i][16 : 16+sizes[i]])
					out = append(out, read{time.Since(start), dst, sizes[i]})
				}
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(limit):
		tn.Close()
		<-done
		t.Fatalf("%d of %d packets read in %s", len(out), want, limit)
	}
	return out
}

// TestTUNQueues drives the userspace shaper without root. At 1 Mbps
// (burst 1500 bytes, 12,500 bytes of queue) ten 1250-byte packets sent at
// once to region r-a are all admitted, the first at once and the others
// paced at the rate, in order; a packet to the unlimited region r-b and a
// small one to r-a, sent after them, are not held behind them. Then a
// burst beyond the queue bound is dropped in part.
func TestTUNQueues(t *testing.T) {
	p := newPipeTUN(t)
	tn, err := NewTUN(p, LimiterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = tn.Set(Desired{
		Regions:  map[string]Rate{"r-a": Mbps, "r-b": 0},
		Prefixes: map[netip.Prefix]string{mustPrefix("10.1.0.0/16"): "r-a", mustPrefix("10.2.0.0/16"): "r-b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		p.send(t, pkt{src: "10.100.0.1", dst: "10.1.0.1", sport: uint16(i), size: 1250})
	}
	p.send(t, pkt{src: "10.100.0.1", dst: "10.2.0.1", size: 1250})
	p.send(t, pkt{src: "10.100.0.1", dst: "10.1.0.2", proto: 1, size: 100})
	got := readAll(t, tn, 12, 5*time.Second)
	var bulk []time.Duration
	for i, r := range got {
		switch r.dst {
		case mustAddr("10.2.0.1"), mustAddr("10.1.0.2"):
			if i > 4 || r.at > 50*time.Millisecond {
				t.Errorf("%s came %d-th, after %s: held behind r-a's queue", r.dst, i+1, r.at)
			}
		default:
			bulk = append(bulk, r.at)
		}
	}
	if len(bulk) != 10 {
		t.Fatalf("%d of 10 bulk packets of r-a", len(bulk))
	}
	// The tenth is due (10*1250 - 1500) bytes / 125,000 B/s = 88 ms after
	// the first.
	if span := bulk[9] - bulk[0]; span < 80*time.Millisecond || span > 400*time.Millisecond {
		t.Errorf("r-a's ten packets took %s, want about 88 ms", span)
	}
	c, _ := tn.Counters()
	if c["r-a"].PassedPackets != 11 || c["r-a"].DroppedPackets != 0 || c["r-b"].PassedPackets != 1 {
		t.Fatalf("counters %+v", c)
	}

	// Idle for the bucket to fill, then 15 at once: 1500 + 12,500 bytes
	// hold 11 of them; 4 are dropped.
	time.Sleep(150 * time.Millisecond)
	for i := 0; i < 15; i++ {
		p.send(t, pkt{src: "10.100.0.1", dst: "10.1.0.1", size: 1250})
	}
	readAll(t, tn, 11, 5*time.Second)
	c, _ = tn.Counters()
	if a := c["r-a"]; a.PassedPackets != 22 || a.DroppedPackets != 4 {
		t.Fatalf("after a burst of 15: %+v, want 22 passed and 4 dropped", a)
	}
}

// TestRemote sets a helper's shaper over its socket, reads its counters,
// and sets a restarted helper's empty buckets again on its own.
func TestRemote(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shaper")
	path := filepath.Join(dir, "ocwtest.sock")
	serve := func() (*Server, *TUN) {
		tn, err := NewTUN(newPipeTUN(t), LimiterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := Listen(path, tn, nil)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve()
		return srv, tn
	}
	srv, tn := serve()
	for p, mode := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600 | os.ModeSocket} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != mode {
			t.Fatalf("%s: mode %v (%v), want %v", p, fi.Mode(), err, mode)
		}
	}
	r := NewRemote(path)
	d := Desired{Regions: map[string]Rate{"r-a": Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.1.0.0/16"): "r-a"}}
	if err := r.Set(d); err != nil {
		t.Fatal(err)
	}
	if c, err := r.Counters(); err != nil || len(c) != 1 {
		t.Fatalf("counters %v, %v: want r-a's", c, err)
	}
	if lc, _ := tn.Counters(); len(lc) != 1 {
		t.Fatalf("the helper's own counters: %v", lc)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Counters(); err == nil {
		t.Fatal("counters read from a helper that is gone")
	}
	srv, tn = serve()
	// The agent reads the counters every second: that sets the new
	// helper's buckets.
	if c, err := r.Counters(); err != nil || len(c) != 1 {
		t.Fatalf("counters of a restarted helper %v, %v: want r-a's", c, err)
	}
	if lc, _ := tn.Counters(); len(lc) != 1 {
		t.Fatalf("a restarted helper's buckets are not set again: %v", lc)
	}
	if err := r.Close(true); err != nil {
		t.Fatal(err)
	}
	if lc, _ := tn.Counters(); len(lc) != 0 {
		t.Fatalf("Close(true) left buckets in the helper: %v", lc)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(true); err != nil {
		t.Fatalf("emptying a helper that is gone: %v", err)
	}
}
