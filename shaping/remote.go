package shaping

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The shaper socket of a userspace WireGuard helper. The helper owns the
// TUN, and so the buckets (they live as long as the helper, across agent
// restarts); the agent configures them and reads their counters through
// this socket:
//
//   - a unix stream socket SocketPath(DEVICE), mode 0600, in SocketDir,
//     mode 0700: only root reaches it;
//   - one exchange per connection: the client sends one JSON request, the
//     server answers one JSON response and closes;
//   - request {"op":"set","desired":{"regions":{REGION:BPS},
//     "prefixes":{PREFIX:REGION},"control_addrs":[ADDR]}} replaces what
//     the helper enforces (an empty desired state: nothing); request
//     {"op":"counters"} reads them;
//   - response {"instance":ID,"counters":{REGION:{"passed_bytes":N,
//     "passed_packets":N,"dropped_bytes":N,"dropped_packets":N}},
//     "error":TEXT}; instance changes when the helper restarts (its
//     buckets are then empty), which is how a client knows to set them
//     again.
const SocketDir = "/run/opencen/shaper"

// SocketPath is the shaper socket of the helper serving device.
func SocketPath(device string) string { return filepath.Join(SocketDir, device+".sock") }

// maxRequest bounds one request: 100,000 prefixes take about 4 MB.
const maxRequest = 64 << 20

type wireDesired struct {
	Regions      map[string]Rate         `json:"regions,omitempty"`
	Prefixes     map[netip.Prefix]string `json:"prefixes,omitempty"`
	ControlAddrs []netip.Addr            `json:"control_addrs,omitempty"`
}

type wireCounters struct {
	PassedBytes    uint64 `json:"passed_bytes"`
	PassedPackets  uint64 `json:"passed_packets"`
	DroppedBytes   uint64 `json:"dropped_bytes"`
	DroppedPackets uint64 `json:"dropped_packets"`
}

type request struct {
	Op      string       `json:"op"`
	Desired *wireDesired `json:"desired,omitempty"`
}

type response struct {
	Instance string                  `json:"instance"`
	Counters map[string]wireCounters `json:"counters,omitempty"`
	Error    string                  `json:"error,omitempty"`
}

// Server serves a TUN's shaper socket.
type Server struct {
	ln       net.Listener
	path     string
	t        *TUN
	log      *slog.Logger
	instance string
	conns    sync.WaitGroup
}

// Listen opens the shaper socket at path for t, replacing a stale socket
// file: the caller owns the device (wireguard-go's UAPI socket of the same
// device proved that no other helper serves it).
func Listen(path string, t *TUN, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("shaper socket folder: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("shaper socket folder: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale shaper socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("shaper socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("shaper socket: %w", err)
	}
	inst := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	return &Server{ln: ln, path: path, t: t, log: log, instance: inst}, nil
}

// Serve answers requests until Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("shaper socket: %w", err)
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.serve(c)
		}()
	}
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var req request
	resp := response{Instance: s.instance}
	if err := json.NewDecoder(io.LimitReader(c, maxRequest)).Decode(&req); err != nil {
		resp.Error = fmt.Sprintf("bad request: %v", err)
	} else {
		resp.Counters, resp.Error = s.handle(req)
	}
	if err := json.NewEncoder(c).Encode(resp); err != nil {
		s.log.Debug("shaper socket: answer", "err", err)
	}
}

func (s *Server) handle(req request) (map[string]wireCounters, string) {
	switch req.Op {
	case "set":
		var d Desired
		if req.Desired != nil {
			d = Desired{Regions: req.Desired.Regions, Prefixes: req.Desired.Prefixes, ControlAddrs: req.Desired.ControlAddrs}
		}
		if err := s.t.Set(d); err != nil {
			return nil, err.Error()
		}
		s.log.Info("shaper set", "regions", len(d.Regions), "prefixes", len(d.Prefixes))
		return nil, ""
	case "counters":
		c, err := s.t.Counters()
		if err != nil {
			return nil, err.Error()
		}
		out := make(map[string]wireCounters, len(c))
		for r, v := range c {
			out[r] = wireCounters(v)
		}
		return out, ""
	}
	return nil, fmt.Sprintf("unknown op %q", req.Op)
}

// Close stops serving and removes the socket (and its folder, if empty).
func (s *Server) Close() error {
	err := s.ln.Close()
	s.conns.Wait()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	_ = os.Remove(filepath.Dir(s.path))
	return err
}

// Remote is the agent's end of a helper's shaper socket: the userspace
// shaper, driven like a Shaper. It sends a desired state only when it
// changed, or when the helper behind the socket is a new one (seen on
// every call: Counters, which the agent reads every second, sets the
// buckets of a restarted helper again).
type Remote struct {
	path string

	mu       sync.Mutex
	last     *Desired // as the helper has it
	instance string   // the helper that has it
}

// NewRemote returns the client of the shaper socket at path; it connects
// on each call.
func NewRemote(path string) *Remote { return &Remote{path: path} }

// Set makes the helper enforce d.
func (r *Remote) Set(d Desired) error {
	if err := d.validate(); err != nil {
		return fmt.Errorf("invalid desired state: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last != nil && r.instance != "" && sameDesired(*r.last, d) {
		return nil
	}
	return r.set(d)
}

// set sends d; r.mu is held.
func (r *Remote) set(d Desired) error {
	resp, err := r.call(request{Op: "set", Desired: &wireDesired{Regions: d.Regions, Prefixes: d.Prefixes, ControlAddrs: d.ControlAddrs}})
	if err != nil {
		r.last = nil
		return err
	}
	c := Desired{Regions: maps.Clone(d.Regions), Prefixes: maps.Clone(d.Prefixes), ControlAddrs: slices.Clone(d.ControlAddrs)}
	r.last, r.instance = &c, resp.Instance
	return nil
}

// Counters reads the helper's counters; a helper that is not the one that
// was set is set again first.
func (r *Remote) Counters() (map[string]Counters, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	resp, err := r.call(request{Op: "counters"})
	if err != nil {
		// Whatever answers next may be another helper: Set sends again.
		r.instance = ""
		return nil, err
	}
	if r.last != nil && resp.Instance != r.instance {
		if err := r.set(*r.last); err != nil {
			return nil, fmt.Errorf("set the buckets of a restarted helper: %w", err)
		}
		if resp, err = r.call(request{Op: "counters"}); err != nil {
			return nil, err
		}
	}
	out := make(map[string]Counters, len(resp.Counters))
	for reg, c := range resp.Counters {
		out[reg] = Counters(c)
	}
	return out, nil
}

// Close with cleanup empties the helper's shaper; without, it leaves it
// enforcing for the next agent. A helper already gone, or one with no
// shaper socket (nothing of ours listens), is success: there is nothing
// to empty.
func (r *Remote) Close(cleanup bool) error {
	if !cleanup {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.set(Desired{})
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}

func (r *Remote) call(req request) (response, error) {
	var resp response
	c, err := net.DialTimeout("unix", r.path, 2*time.Second)
	if err != nil {
		return resp, fmt.Errorf("userspace shaper of the wireguard helper: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return resp, fmt.Errorf("userspace shaper: send: %w", err)
	}
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return resp, fmt.Errorf("userspace shaper: answer: %w", err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("userspace shaper: %s", resp.Error)
	}
	return resp, nil
}

func sameDesired(a, b Desired) bool {
	return maps.Equal(a.Regions, b.Regions) && maps.Equal(a.Prefixes, b.Prefixes) && slices.Equal(a.ControlAddrs, b.ControlAddrs)
}
