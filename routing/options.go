package routing

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options configure a Speaker. Zero values take the documented defaults.
type Options struct {
	// Logger receives the speaker's logs and GoBGP's own (under
	// component=gobgp). Required.
	Logger *slog.Logger
	// Port is the BGP port listened on (on Desired.LocalAddress) and dialled
	// on gateway peers. Default 179; tests use random high ports.
	Port int32
	// OnRoutes receives learned routes in coalesced batches, from one
	// goroutine, never concurrently. It may be slow: changes made while it
	// runs are merged into the next batch.
	OnRoutes func(RouteBatch)
	// OnSessions receives every configured session and whether it is
	// established, each time that changes: a session coming up or going
	// down (BFD's detection included), one added or removed by Set, the BGP
	// server restarting. It is driven by GoBGP's peer-state events, not
	// polled, and called at once (not coalesced like OnRoutes), from one
	// goroutine, never concurrently; the slice is the callee's. The first
	// call follows the first Set.
	OnSessions func([]SessionUp)
	// Coalesce is how long changes are gathered into one batch.
	// Default 100ms.
	Coalesce time.Duration
	// HoldTime and Keepalive for BGP sessions. Defaults 9s and 3s: BFD does
	// the fast detection, so BGP timers stay conservative.
	HoldTime, Keepalive time.Duration
	// ConnectRetry is the delay between connection attempts. Default 2s.
	ConnectRetry time.Duration
	// GracefulRestartTime is how long peers keep our routes while the agent
	// restarts (RFC 4724). Default 120s.
	GracefulRestartTime time.Duration
	// Restarting tells peers (the R bit) that this is a restart after a
	// graceful Close, so they keep our routes until we resend them.
	Restarting bool
	// SyncTimeout bounds how long the first Synced batch waits for End-of-RIB
	// from every gateway peer. Default 60s.
	SyncTimeout time.Duration
	// BFD settings for gateway sessions and VBR sessions with BFD set.
	BFD BFDOptions
	// TunnelDevice is the WireGuard device the gateway sessions ride. BFD
	// between gateways is bound to it (SO_BINDTODEVICE): a packet
	// claiming a peer's tunnel address that arrives any other way is never
	// read. Empty binds to no device, for speakers on loopback in tests.
	TunnelDevice string
}

// BFDOptions tune BFD (RFC 5880). Detection time is Interval*Multiplier.
// Gateway sessions run the speaker's own batched BFD (gatewayBFD, on
// Desired.LocalAddress port GatewayBFDPort); VBR sessions with BFD run
// GoBGP's.
type BFDOptions struct {
	// Disable turns BFD off everywhere. GoBGP's BFD listens on the fixed
	// UDP port 3784 (RFC 5881) of every address, so several speakers in one
	// network namespace, as in unit tests, cannot all run it.
	Disable bool
	// Interval between BFD packets; default 100ms.
	Interval time.Duration
	// Multiplier: how many intervals without a packet declare the peer
	// down; default 3.
	Multiplier uint32
}

func (o *Options) defaults() error {
	if o.Logger == nil {
		return errors.New("routing options: logger is required")
	}
	if o.Port == 0 {
		o.Port = 179
	}
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("routing options: port %d out of range 1-65535", o.Port)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Coalesce, 100*time.Millisecond)
	def(&o.HoldTime, 9*time.Second)
	def(&o.Keepalive, 3*time.Second)
	def(&o.ConnectRetry, 2*time.Second)
	def(&o.GracefulRestartTime, 120*time.Second)
	def(&o.SyncTimeout, 60*time.Second)
	def(&o.BFD.Interval, 100*time.Millisecond)
	if o.BFD.Multiplier == 0 {
		o.BFD.Multiplier = 3
	}
	return nil
}
