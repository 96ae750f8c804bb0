package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func cenctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestValidatePrintsTheMatrix(t *testing.T) {
	out, errOut, code := cenctl(t, "validate", "../../examples/realistic.yaml")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{
		"valid. instance cen-prod",
		"REGION A",
		"cn-beijing    us-west-1     60Mbps     package bwp-china-na",
		"eu-central-1  us-west-1     1Kbps      default (no interconnection)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestValidateJSON(t *testing.T) {
	for _, args := range [][]string{
		{"validate", "-o", "json", "../../examples/lab.yaml"},
		{"validate", "../../examples/lab.yaml", "--output=json"},
	} {
		out, errOut, code := cenctl(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d, stderr %s", args, code, errOut)
		}
		var doc struct {
			Instance string `json:"instance"`
			Pairs    []struct {
				Regions   []string `json:"regions"`
				Bandwidth uint64   `json:"bandwidth_bps"`
				Source    string   `json:"source"`
				Package   *string  `json:"package"`
			} `json:"pairs"`
		}
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if doc.Instance != "cen-lab" || len(doc.Pairs) != 6 {
			t.Fatalf("doc = %+v", doc)
		}
		first, last := doc.Pairs[0], doc.Pairs[5]
		if strings.Join(first.Regions, ",") != "cn-beijing,cn-shanghai" || first.Bandwidth != 40_000_000 || first.Source != "package" || first.Package == nil || *first.Package != "bwp-china" {
			t.Errorf("first pair = %+v", first)
		}
		if strings.Join(last.Regions, ",") != "eu-central-1,us-west-1" || last.Bandwidth != 1000 || last.Source != "default" || last.Package != nil {
			t.Errorf("default pair = %+v (package must be omitted)", last)
		}
	}
}

func TestValidateReportsEveryErrorAndExitsOne(t *testing.T) {
	out, errOut, code := cenctl(t, "validate", "../../config/testdata/five-mistakes.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if out != "" {
		t.Errorf("a bad file printed a matrix: %s", out)
	}
	var located int
	for _, line := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if strings.HasPrefix(line, "../../config/testdata/five-mistakes.yaml:") && strings.Count(line, ":") >= 3 {
			parts := strings.SplitN(line, ":", 4)
			if parts[1] != "" && parts[2] != "" {
				located++
			}
		}
	}
	if located != 5 {
		t.Errorf("got %d located errors, want 5:\n%s", located, errOut)
	}
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"validate"}, 2, "validate takes FILE"},
		{[]string{"validate", "a", "b"}, 2, "validate takes FILE"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"validate", "--colour", "x"}, 2, "unknown flag"},
		{[]string{"validate", "-o", "yaml", "../../examples/small.yaml"}, 2, `unknown output format "yaml"`},
		{[]string{"validate", "/nonexistent/cen.yaml"}, 1, "no such file"},
		{[]string{"--socket", "/tmp/x.sock", "validate", "../../examples/small.yaml"}, 0, ""},
		{[]string{"validate", "../../examples/small.yaml", "--socket", "/tmp/x.sock"}, 0, ""},
	}
	for _, tc := range cases {
		_, errOut, code := cenctl(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("cenctl %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

func TestPlan(t *testing.T) {
	data, err := os.ReadFile("../../examples/small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(data), "bandwidth: 60Mbps", "bandwidth: 80Mbps", 1)
	changed = strings.Replace(changed, "cidrs: [10.20.0.0/16]", "cidrs: [10.20.0.0/16, 10.21.0.0/16]", 1)
	path := filepath.Join(t.TempDir(), "new.yaml")
	if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cenctl(t, "plan", "../../examples/small.yaml", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"instance cen-small: 0 gateway(s) to add, 0 to remove, 2 to change",
		"~ gateway gw-beijing",
		"~ egress to us-west-1: 60Mbps -> 80Mbps",
		"~ peer gw-siliconvalley: entitlement 10.20.0.0/16 -> 10.20.0.0/16 10.21.0.0/16",
		"+ originate 10.21.0.0/16",
		"~ cn-beijing <-> us-west-1: 60Mbps (package bwp-china-na) -> 80Mbps (package bwp-china-na)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	out, _, code = cenctl(t, "plan", "-o", "json", "../../examples/small.yaml", path)
	var plan struct {
		Gateways []struct {
			Gateway string `json:"gateway"`
			Action  string `json:"action"`
		} `json:"gateways"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &plan) != nil || len(plan.Gateways) != 2 || plan.Gateways[0].Action != "change" {
		t.Errorf("plan json (exit %d): %s", code, out)
	}
	out, _, _ = cenctl(t, "plan", "../../examples/small.yaml", "../../examples/small.yaml")
	if !strings.Contains(out, "no changes") {
		t.Errorf("identical files: %s", out)
	}
	_, _, code = cenctl(t, "plan", "../../examples/small.yaml", "../../config/testdata/five-mistakes.yaml")
	if code != 1 {
		t.Errorf("plan to a bad file: exit %d, want 1", code)
	}
}

func TestTopology(t *testing.T) {
	out, errOut, code := cenctl(t, "topology", "../../examples/realistic.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`graph "cen-prod" {`,
		`subgraph "cluster_area_mainland-china"`,
		`subgraph "cluster_region_cn-beijing"`,
		`"gw:gw-beijing-1" [shape=box`,
		`"net:idc-beijing" -- "gw:gw-beijing-1" [style=dotted, label=eBGP]`,
		`lhead="cluster_region_us-west-1", label="60Mbps\nbwp-china-na", penwidth=2]`,
		`label="1Kbps default", style=dashed`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("DOT lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "{") != strings.Count(out, "}") {
		t.Error("unbalanced braces")
	}
}
