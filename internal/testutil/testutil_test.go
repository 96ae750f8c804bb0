package testutil

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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

// TestOnlyTestsImportIt: no package of opencen imports testutil outside
// its tests.
func TestOnlyTestsImportIt(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && slices.Contains(f[1:], "github.com/opencen/opencen/internal/testutil") {
			t.Errorf("%s imports internal/testutil outside its tests", f[0])
		}
	}
}
