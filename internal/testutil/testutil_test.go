package testutil

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestNewNetNSAndInNetNS(t *testing.T) {
	RequireRoot(t)
	var name string
	t.Run("create", func(t *testing.T) {
		name = NewNetNS(t, "octu")
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
			t.Fatal(err)
		}
		var up bool
		err := InNetNS(name, func() error {
			lo, err := net.InterfaceByName("lo")
			if err != nil {
				return err
			}
			up = lo.Flags&net.FlagUp != 0
			return nil
		})
		if err != nil || !up {
			t.Errorf("loopback in %s: up %v, err %v", name, up, err)
		}
	})
	if _, err := os.Stat(filepath.Join("/run/netns", name)); !os.IsNotExist(err) {
		t.Errorf("namespace %s left after its test: %v", name, err)
	}
	if err := InNetNS("octu-missing", func() error { return nil }); err == nil {
		t.Error("InNetNS entered a namespace that does not exist")
	}
}

func TestIperf3Result(t *testing.T) {
	var r Iperf3Result
	out := `{"start":{},"end":{"sum_sent":{"bits_per_second":2e9},"sum_received":{"bits_per_second":1.5e9}}}`
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.End.SumReceived.BitsPerSecond != 1.5e9 || r.Error != "" {
		t.Errorf("%+v, %v", r, err)
	}
	if err := json.Unmarshal([]byte(`{"error":"the server is busy running a test. try again later"}`), &r); err != nil || r.Error == "" {
		t.Errorf("%+v, %v", r, err)
	}
}

func TestSuffix(t *testing.T) {
	if a, b := Suffix(4), Suffix(4); len(a) != 8 || a == b {
		t.Errorf("Suffix(4) = %q, %q", a, b)
	}
}
