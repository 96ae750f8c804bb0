// Package api is the contract of cend's control socket: the JSON documents
// it serves and a client for them. cenctl prints these documents as tables,
// or as they are with -o json.
//
// The socket speaks HTTP/1.1 over a unix socket (mode 0600, root only):
//
//	GET  /v1/status     Status
//	GET  /v1/peers      []Peer
//	GET  /v1/routes     []Route
//	GET  /v1/bandwidth  []Bandwidth
//	POST /v1/reload     ReloadResult
//	POST /v1/peers/reset?name=NAME  PeerReset (404: no such session;
//	                    409: not shut down by max_prefixes)
//
// Errors are an Error document with a 4xx or 5xx status.
package api

import "time"

// PeerReset answers a reset of a session max_prefixes shut down.
type PeerReset struct {
	Name string `json:"name"`
}

// DefaultSocket is where cend listens unless told otherwise.
const DefaultSocket = "/run/opencen/cend.sock"

// Status is a gateway's summary.
type Status struct {
	Instance       string    `json:"instance"`
	Gateway        string    `json:"gateway"`
	Region         string    `json:"region"`
	ConfigFile     string    `json:"config_file"`
	ConfigLoadedAt time.Time `json:"config_loaded_at"`
	// ConfigGeneration counts the configs applied since start, the first
	// being 1.
	ConfigGeneration int       `json:"config_generation"`
	StartedAt        time.Time `json:"started_at"`
	// WireGuard is "kernel" or "userspace". Shaping is how cross-region
	// traffic is shaped (cend --shaper): "tcx" or "tc" (the eBPF program
	// at that hook of ShapedDevices' egress) or "userspace" (the
	// WireGuard helper, on what it reads from its TUN, ShapedDevices).
	WireGuard     string   `json:"wireguard"`
	Shaping       string   `json:"shaping"`
	ShapedDevices []string `json:"shaped_devices,omitempty"`
	// Device is the WireGuard device: all CEN traffic leaves through it.
	Device        string            `json:"device"`
	TunnelAddress string            `json:"tunnel_address"`
	Subsystems    []SubsystemStatus `json:"subsystems"`
	PeersUp       int               `json:"peers_up"`
	PeersTotal    int               `json:"peers_total"`
	RoutesTotal   int               `json:"routes_total"`
	RoutesActive  int               `json:"routes_installed"`
	Conflicts     int               `json:"route_conflicts"`
}

// SubsystemStatus is the outcome of the last reconcile of one subsystem
// (dataplane, routing, shaping). Errors are per subsystem: one failing
// never hides another's.
type SubsystemStatus struct {
	Name        string    `json:"name"`
	OK          bool      `json:"ok"`
	Error       string    `json:"error,omitempty"`
	LastApplied time.Time `json:"last_applied"`
}

// Peer is a BGP neighbour of this gateway: another gateway (over its
// tunnel) or a VBR's on-premises router.
type Peer struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"` // "gateway" or "vbr"
	Region    string `json:"region"`
	Address   string `json:"address"` // tunnel address, or the VBR neighbour
	Endpoint  string `json:"endpoint,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
	// AllowedIPs are the prefixes WireGuard takes from and sends to this
	// gateway: its tunnel address and every prefix it is the home of.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
	// LatestHandshake is zero when the tunnel never completed one.
	LatestHandshake  time.Time `json:"latest_handshake,omitzero"`
	RxBytes          uint64    `json:"rx_bytes"`
	TxBytes          uint64    `json:"tx_bytes"`
	BGPState         string    `json:"bgp_state"`
	BGPUptimeSeconds float64   `json:"bgp_uptime_seconds"`
	BFDState         string    `json:"bfd_state,omitempty"`
	PrefixesReceived uint64    `json:"prefixes_received"`
	PrefixesAccepted uint64    `json:"prefixes_accepted"`
	PrefixesRejected uint64    `json:"prefixes_rejected"`
	// Families splits the prefix counts by address family.
	Families []PeerFamily `json:"families,omitempty"`
	// Note explains a state that needs attention, e.g. max_prefixes hit.
	Note string `json:"note,omitempty"`
}

// PeerFamily is a session's prefix counts in one address family.
type PeerFamily struct {
	Family   string `json:"family"` // "ipv4" or "ipv6"
	Received uint64 `json:"received"`
	Accepted uint64 `json:"accepted"`
	Rejected uint64 `json:"rejected"`
}

// Route is a prefix this gateway knows: originated here, or learned.
type Route struct {
	Prefix        string `json:"prefix"`
	OriginRegion  string `json:"origin_region"`
	OriginNetwork string `json:"origin_network"`
	Kind          string `json:"kind"` // "vpc" or "vbr"
	// Source is "local", "gateway", "vbr", or "held": kept for a while
	// after every gateway carrying it lost its session, in case it is
	// only restarting.
	Source    string   `json:"source"`
	NextHops  []string `json:"next_hops,omitempty"`
	Installed bool     `json:"installed"`
}

// Bandwidth is this gateway's egress toward one other region.
type Bandwidth struct {
	Region string `json:"region"`
	// AllocationBps is this gateway's share; PairBps the pair's whole
	// bandwidth; Source is "package" or "default".
	AllocationBps  uint64  `json:"allocation_bps"`
	PairBps        uint64  `json:"pair_bps"`
	Source         string  `json:"source"`
	Package        string  `json:"package,omitempty"`
	RateBps        float64 `json:"rate_bps"`
	Utilisation    float64 `json:"utilisation"`
	PassedBytes    uint64  `json:"passed_bytes"`
	PassedPackets  uint64  `json:"passed_packets"`
	DroppedBytes   uint64  `json:"dropped_bytes"`
	DroppedPackets uint64  `json:"dropped_packets"`
	// SampledAt is when the counters above are read (once a second);
	// RateBps is over the interval that ended then. Tools that want a
	// rate over a longer window divide counter differences by the
	// difference of SampledAt. Zero until the first sample.
	SampledAt time.Time `json:"sampled_at,omitzero"`
}

// ReloadResult says whether a reload took effect. A rejected config leaves
// the running one in place; Errors then holds each located error.
type ReloadResult struct {
	Applied    bool     `json:"applied"`
	Generation int      `json:"config_generation"`
	Errors     []string `json:"errors,omitempty"`
	Changes    []string `json:"changes,omitempty"`
}

// Error is the body of a failed request.
type Error struct {
	Error string `json:"error"`
}
