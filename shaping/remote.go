package shaping

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Remote is the agent's end of a helper's shaper socket: the userspace
// shaper, driven like a Shaper. It sends a desired state only when it
// changed, or when the helper behind the socket is a new one (seen on
// every call: Counters, which the agent reads every second, sets the
// buckets of a restarted helper again).
type Remote struct {
	path string // the socket; fixed by NewRemote

	mu       sync.Mutex // guards the fields below, across a whole exchange
	last     *Desired   // as the helper has it
	instance string     // the helper that has it
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
	if r.last != nil && r.instance != "" && r.last.equal(d) {
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
	c := d.clone()
	r.last, r.instance = &c, resp.Instance
	return nil
}

// Counters reads the helper's counters; a helper other than the one last
// set is set again first.
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
