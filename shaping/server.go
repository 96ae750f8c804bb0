package shaping

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Server serves a TUN's shaper socket.
type Server struct {
	ln       net.Listener
	path     string // the socket file, removed by Close
	t        *TUN
	log      *slog.Logger
	instance string         // names this helper in every answer
	conns    sync.WaitGroup // connections being answered
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
