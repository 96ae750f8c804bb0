package netipx

import (
	"net/netip"
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	p := netip.MustParsePrefix
	for _, c := range []struct {
		in   string
		k    int
		want []string
	}{
		{"10.1.0.0/16", 2, []string{"10.1.0.0/18", "10.1.64.0/18", "10.1.128.0/18", "10.1.192.0/18"}},
		{"10.1.2.3/24", 1, []string{"10.1.2.0/25", "10.1.2.128/25"}},
		{"10.0.0.1/32", 3, []string{"10.0.0.1/32"}},
		{"10.0.0.0/31", 4, []string{"10.0.0.0/32", "10.0.0.1/32"}},
		{"255.255.255.0/24", 1, []string{"255.255.255.0/25", "255.255.255.128/25"}},
		{"fd00:1::/48", 1, []string{"fd00:1::/49", "fd00:1:0:8000::/49"}},
		{"10.0.0.0/8", 0, []string{"10.0.0.0/8"}},
	} {
		var want []netip.Prefix
		for _, w := range c.want {
			want = append(want, p(w))
		}
		if got := Split(p(c.in), c.k); !slices.Equal(got, want) {
			t.Errorf("Split(%s, %d) = %v, want %v", c.in, c.k, got, want)
		}
	}
}

func TestCoversAndOrder(t *testing.T) {
	p := netip.MustParsePrefix
	if !Covers(p("10.0.0.0/8"), p("10.1.0.0/16")) || !Covers(p("10.1.0.0/16"), p("10.1.0.0/16")) {
		t.Error("a prefix covers itself and its more-specifics")
	}
	if Covers(p("10.1.0.0/16"), p("10.0.0.0/8")) || Covers(p("10.0.0.0/8"), p("11.0.0.0/16")) {
		t.Error("a prefix covers neither its supernets nor what lies outside")
	}
	if Covers(p("::/0"), p("10.0.0.0/8")) {
		t.Error("families never cover each other")
	}
	if !CoveredBy(p("192.168.1.0/24"), []netip.Prefix{p("10.0.0.0/8"), p("192.168.0.0/16")}) {
		t.Error("CoveredBy misses a covering prefix")
	}
	if o, ok := OverlapsAny(p("10.0.0.0/8"), []netip.Prefix{p("192.168.0.0/16"), p("10.1.2.0/24")}); !ok || o != p("10.1.2.0/24") {
		t.Errorf("OverlapsAny = %v %v", o, ok)
	}
	list := []netip.Prefix{p("10.1.0.0/24"), p("10.1.0.0/16"), p("::/0"), p("9.0.0.0/8")}
	slices.SortFunc(list, ComparePrefix)
	want := []netip.Prefix{p("9.0.0.0/8"), p("10.1.0.0/16"), p("10.1.0.0/24"), p("::/0")}
	if !slices.Equal(list, want) {
		t.Errorf("order %v, want %v", list, want)
	}
	if Host(netip.MustParseAddr("fd00::1")) != p("fd00::1/128") {
		t.Error("Host of an IPv6 address")
	}
}
