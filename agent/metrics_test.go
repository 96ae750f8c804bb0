package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestInfoMetrics: opencen_build_info carries the binary's version and
// commit, opencen_config_info the instance and the digest of the file in
// use, which differs as soon as the file does.
func TestInfoMetrics(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	if _, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs), Registerer: reg,
		Build: BuildInfo{Version: "v1.2.3-4-gabcdef0", Commit: "abcdef0"}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]string{}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			if f.GetName() != "opencen_build_info" && f.GetName() != "opencen_config_info" {
				continue
			}
			if m.GetGauge().GetValue() != 1 {
				t.Errorf("%s = %v, want 1", f.GetName(), m.GetGauge().GetValue())
			}
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[f.GetName()] = labels
		}
	}
	if b := got["opencen_build_info"]; b["version"] != "v1.2.3-4-gabcdef0" || b["commit"] != "abcdef0" {
		t.Errorf("opencen_build_info %v", b)
	}
	if c := got["opencen_config_info"]; c["cen"] != "t" || c["digest"] != hex.EncodeToString(sum[:8]) {
		t.Errorf("opencen_config_info %v, want digest %x", c, sum[:8])
	}
}
