package routing

import (
	"net/netip"
	"testing"
)

// TestSetSameDesiredRecomputesNothing: the agent sets the routing state
// on every reconcile; only a change may make the speaker recompute its
// learned routes (100,000 of them, in a burst).
func TestSetSameDesiredRecomputesNothing(t *testing.T) {
	st := newState(testLogger(t), Options{})
	set := func(d Desired) {
		t.Helper()
		names, err := newNameTable(&d)
		if err != nil {
			t.Fatal(err)
		}
		st.setDesired(&d, newFilter(&d), names)
	}
	d := desiredA(1179)
	set(cloneDesired(d))
	for i := range 3 {
		st.learned.rib[netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24)] = &ribEntry{}
	}
	clear(st.learned.dirty)

	set(cloneDesired(d))
	if len(st.learned.dirty) != 0 {
		t.Errorf("the same desired state again marked %d routes for recomputation", len(st.learned.dirty))
	}
	changed := cloneDesired(d)
	changed.Originate[0].Network = "renamed"
	set(changed)
	if len(st.learned.dirty) != 3 {
		t.Errorf("a changed desired state marked %d of 3 routes for recomputation", len(st.learned.dirty))
	}
}
