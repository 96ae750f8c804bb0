package shaping

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDesiredValidate(t *testing.T) {
	bad := Desired{
		Regions: map[string]Rate{"": Mbps, strings.Repeat("x", 64): Mbps, "r-fast": MaxRate + 1},
		Prefixes: map[netip.Prefix]string{
			netip.MustParsePrefix("10.1.2.3/16"):         "r-a",
			netip.MustParsePrefix("::ffff:10.0.0.0/104"): "r-a",
			netip.MustParsePrefix("10.2.0.0/16"):         "",
		},
	}
	err := bad.validate()
	if err == nil {
		t.Fatal("invalid desired state accepted")
	}
	for _, want := range []string{
		"empty region id",
		"longer than 63 bytes",
		"above the maximum",
		"10.1.2.3/16 of region \"r-a\" has host bits set (want 10.1.0.0/16)",
		"IPv4-mapped",
		"prefix 10.2.0.0/16: empty region id",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	good := Desired{
		Regions:      map[string]Rate{"r-a": Mbps, "r-b": 0},
		Prefixes:     map[netip.Prefix]string{netip.MustParsePrefix("10.0.0.0/8"): "r-a", netip.MustParsePrefix("fd00::/8"): "home"},
		ControlAddrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")},
	}
	if err := good.validate(); err != nil {
		t.Fatalf("valid desired state rejected: %v", err)
	}
	if got := strings.Join(good.regionNames(), ","); got != "home,r-a,r-b" {
		t.Fatalf("regionNames = %s", got)
	}
}
