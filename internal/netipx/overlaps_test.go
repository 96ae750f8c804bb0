package netipx

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// firstOverlapsByPairs is the definition FirstOverlaps must agree with:
// every prefix against every one ahead of it.
func firstOverlapsByPairs(list []netip.Prefix) []int {
	out := make([]int, len(list))
	for i, p := range list {
		out[i] = -1
		for j := range i {
			if list[j].Overlaps(p) {
				out[i] = j
				break
			}
		}
	}
	return out
}

func TestFirstOverlaps(t *testing.T) {
	mp := netip.MustParsePrefix
	list := []netip.Prefix{
		mp("10.1.0.0/16"), mp("10.2.0.0/16"), mp("10.1.2.0/24"), mp("10.0.0.0/8"),
		mp("10.1.0.0/16"), mp("192.168.0.0/24"), mp("fd00::/48"), mp("fd00:0:0:1::/64"), mp("0.0.0.0/1"),
	}
	want := []int{-1, -1, 0, 0, 0, -1, -1, 6, 0}
	if got := FirstOverlaps(list); !slices.Equal(got, want) {
		t.Errorf("FirstOverlaps = %v, want %v", got, want)
	}
	if got := FirstOverlaps(nil); len(got) != 0 {
		t.Errorf("FirstOverlaps(nil) = %v", got)
	}
}

// TestFirstOverlapsAgreesWithPairs: on random nested prefixes of both
// families, the sweep finds what comparing every pair finds.
func TestFirstOverlapsAgreesWithPairs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		list := make([]netip.Prefix, 1+r.IntN(60))
		for i := range list {
			if r.IntN(4) == 0 {
				a := netip.AddrFrom16([16]byte{0xfd, 0, byte(r.IntN(4)), byte(r.IntN(4))})
				list[i] = netip.PrefixFrom(a, 16+r.IntN(17)).Masked()
				continue
			}
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), byte(r.IntN(256))})
			list[i] = netip.PrefixFrom(a, 8+r.IntN(25)).Masked()
		}
		if got, want := FirstOverlaps(list), firstOverlapsByPairs(list); !slices.Equal(got, want) {
			t.Fatalf("round %d: %v\nFirstOverlaps = %v\nby pairs      = %v", round, list, got, want)
		}
	}
}
