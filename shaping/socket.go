package shaping

import (
	"net/netip"
	"path/filepath"
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
