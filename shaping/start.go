package shaping

import (
	"errors"
	"log/slog"
)

// Enforcer is what a gateway drives: the eBPF *Shaper, or the userspace
// *Limiter where eBPF is unavailable.
type Enforcer interface {
	Set(Desired) error
	Counters() (map[string]Counters, error)
	Close(cleanup bool) error
}

var (
	_ Enforcer = (*Shaper)(nil)
	_ Enforcer = (*Limiter)(nil)
)

// Start returns the eBPF shaper of opts.Interfaces, or, when the host
// cannot run it (ErrUnsupported), a userspace Limiter, logged at error
// level because the kernel's forwarding path is then not shaped: only
// traffic forwarded through Limiter.Admit is. Any other error is returned.
func Start(opts Options) (Enforcer, error) {
	s, err := New(opts)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, ErrUnsupported) {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ifs := opts.Interfaces
	if len(ifs) == 0 {
		ifs = []string{opts.Interface}
	}
	log.Error("EBPF SHAPING UNAVAILABLE: falling back to the userspace limiter; only traffic forwarded through it is shaped",
		"interfaces", ifs, "err", err)
	return NewLimiter(LimiterOptions{Mode: opts.Mode, QueueDelay: opts.QueueDelay, Logger: opts.Logger})
}
