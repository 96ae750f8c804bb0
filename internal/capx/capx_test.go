package capx

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestEffectiveMatchesProc: the set Capget reports is the CapEff line of
// /proc/self/status.
func TestEffectiveMatchesProc(t *testing.T) {
	got, err := Effective()
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			want, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(got) != want {
				t.Errorf("Effective() = %x, /proc says %x", uint64(got), want)
			}
			return
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
}

func TestMissing(t *testing.T) {
	s := Set(1<<uint(NetAdmin) | 1<<uint(BPF))
	if got := s.Missing(NetAdmin, SysAdmin, BPF, Perfmon); !slices.Equal(got, []Cap{SysAdmin, Perfmon}) {
		t.Errorf("Missing = %v", got)
	}
	if got := Join([]Cap{SysAdmin, Perfmon}); got != "CAP_SYS_ADMIN, CAP_PERFMON" {
		t.Errorf("Join = %q", got)
	}
}
