package routing

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// peerSpec is everything that defines one session; a change in it means
// the session is replaced, any other Set leaves it untouched.
type peerSpec struct {
	kind        SessionKind
	name        string
	addr, local netip.Addr
	peerASN     uint32
	password    string
	bfd         bool
	ttlSecurity bool
	maxPrefixes uint32
	port        uint16
}

func (s *Speaker) peerSpecs(d *Desired) map[netip.Addr]peerSpec {
	m := make(map[netip.Addr]peerSpec, len(d.Gateways)+len(d.VBRs))
	for _, g := range d.Gateways {
		m[g.Address] = peerSpec{kind: SessionGateway, name: g.Name, addr: g.Address, local: d.LocalAddress,
			peerASN: d.InstanceASN, bfd: !s.opts.BFD.Disable}
	}
	for _, v := range d.VBRs {
		m[v.Neighbor] = peerSpec{kind: SessionVBR, name: v.Network, addr: v.Neighbor, local: v.LocalAddress,
			peerASN: v.PeerASN, password: v.Password, bfd: v.BFD && !s.opts.BFD.Disable, ttlSecurity: v.TTLSecurity, maxPrefixes: v.MaxPrefixes, port: v.Port}
	}
	return m
}

// addPeers adds the sessions of want that are new and replaces those
// whose spec changed; the others are not touched.
func (s *Speaker) addPeers(ctx context.Context, want map[netip.Addr]peerSpec) []error {
	var errs []error
	for addr, spec := range want {
		old, ok := s.bgp.peers[addr]
		if ok && old == spec {
			continue
		}
		if h, held := s.bgp.held[addr]; held {
			if h == spec {
				continue // held down after max_prefixes
			}
			// A changed session starts afresh.
			delete(s.bgp.held, addr)
			s.state.clearTrip(addr)
		}
		if ok {
			if err := s.bgp.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
				errs = append(errs, fmt.Errorf("routing: replace session %s: %w", spec.name, err))
				continue
			}
			delete(s.bgp.peers, addr)
		}
		if err := s.bgp.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(spec)}); err != nil {
			errs = append(errs, fmt.Errorf("routing: add session %s (%s): %w", spec.name, addr, err))
			continue
		}
		s.bgp.peers[addr] = spec
		s.log.Info("bgp session configured", "session", spec.name, "neighbor", addr, "kind", string(spec.kind))
	}
	return errs
}

// removePeers deletes the sessions that are not in want.
func (s *Speaker) removePeers(ctx context.Context, want map[netip.Addr]peerSpec) []error {
	var errs []error
	for addr := range s.bgp.held {
		if _, ok := want[addr]; !ok {
			delete(s.bgp.held, addr)
		}
	}
	for addr, spec := range s.bgp.peers {
		if _, ok := want[addr]; ok {
			continue
		}
		if err := s.bgp.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("routing: remove session %s: %w", spec.name, err))
			continue
		}
		delete(s.bgp.peers, addr)
		s.log.Info("bgp session removed", "session", spec.name, "neighbor", addr)
	}
	return errs
}

// setGatewayBFDPeers runs gateway BFD on the gateway sessions that ask
// for it.
func (s *Speaker) setGatewayBFDPeers() {
	if s.bgp.gwBFD == nil {
		return
	}
	var peers []netip.Addr
	for addr, spec := range s.bgp.peers {
		if spec.kind == SessionGateway && spec.bfd {
			peers = append(peers, addr)
		}
	}
	s.bgp.gwBFD.setPeers(peers)
}

// families are the address families every session carries, gateway and
// VBR alike, whatever the family of the session's own addresses.
var families = []*api.Family{
	{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
	{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST},
}

func secs(d time.Duration) uint64 { return uint64((d + time.Second - 1) / time.Second) }

func (s *Speaker) apiPeer(p peerSpec) *api.Peer {
	afs := make([]*api.AfiSafi, len(families))
	for i, f := range families {
		afs[i] = &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: f, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}
	}
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.addr.String(),
			PeerAsn:         p.peerASN,
			Description:     p.name,
			AuthPassword:    p.password,
		},
		Transport: &api.Transport{},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           secs(s.opts.ConnectRetry),
			HoldTime:               secs(s.opts.HoldTime),
			KeepaliveInterval:      secs(s.opts.Keepalive),
			IdleHoldTimeAfterReset: 1,
		}},
		GracefulRestart: &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(secs(s.opts.GracefulRestartTime)),
			// Only sessions opened while recovering from our own restart
			// carry the R bit; one added by a reload hours later must not.
			LocalRestarting: s.opts.Restarting && !s.state.isSynced(),
		},
		AfiSafis: afs,
	}
	if p.local.IsValid() {
		peer.Transport.LocalAddress = p.local.String()
	}
	if p.kind == SessionGateway {
		peer.Transport.RemotePort = uint32(s.opts.Port)
		// Between gateways only the lower address dials: when both dial
		// at once (both agents starting, or both resetting on a BFD
		// event) GoBGP's collision handling can cycle through
		// OpenConfirm many times over until one connection wins.
		if p.local.IsValid() && p.local.Compare(p.addr) > 0 {
			peer.Transport.PassiveMode = true
		}
	} else if p.port != 0 {
		peer.Transport.RemotePort = uint32(p.port)
	}
	if p.ttlSecurity {
		// GTSM (RFC 5082) for a router one hop away: send with TTL 255,
		// and the kernel drops what arrives with less (IP_MINTTL).
		peer.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: 255}
	}
	if p.bfd && p.kind != SessionGateway { // gateway sessions: gatewayBFD
		us := uint32(s.opts.BFD.Interval / time.Microsecond)
		peer.Bfd = &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: us, RequiredMinimumReceive: us, DetectionMultiplier: s.opts.BFD.Multiplier}
	}
	return peer
}
