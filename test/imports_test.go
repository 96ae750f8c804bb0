package test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowedImports is the whole graph of opencen's packages (ARCHITECTURE.md):
// cmd -> agent -> {desired, dataplane, routing, shaping} -> config, and
// cmd/cenctl -> lab -> {agent/api, config}. Every package may import
// internal/ helpers (but not internal/testutil, which is for tests); the
// tests under test/ are outside the graph: nothing imports them.
var allowedImports = map[string][]string{
	"cmd/cend":         {"agent", "agent/api", "config"},
	"cmd/cenctl":       {"lab", "agent/api", "config"},
	"agent":            {"desired", "dataplane", "routing", "shaping", "config", "agent/api"},
	"agent/api":        nil,
	"desired":          {"config"},
	"dataplane":        {"config"},
	"routing":          {"config"},
	"shaping":          {"config"},
	"config":           nil,
	"lab":              {"agent/api", "config"},
	"test/benchreport": nil,
}

const modulePath = "github.com/opencen/opencen"

// TestImportGraph holds every non-test package's imports of this module
// (go list, so it sees what the compiler sees) against allowedImports.
func TestImportGraph(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], modulePath), "/")
		seen[pkg] = true
		if pkg == "test" || strings.HasPrefix(pkg, "internal/") {
			if pkg == "internal/testutil" {
				continue
			}
			for _, imp := range ours(fields[1:]) {
				if !strings.HasPrefix(imp, "internal/") || imp == "internal/testutil" {
					t.Errorf("%s imports %s: an internal helper imports only other helpers", pkg, imp)
				}
			}
			continue
		}
		allowed, known := allowedImports[pkg]
		if !known {
			t.Errorf("package %s is not in the import graph: add it to allowedImports and ARCHITECTURE.md", pkg)
			continue
		}
		for _, imp := range ours(fields[1:]) {
			if imp == "internal/testutil" || (!strings.HasPrefix(imp, "internal/") && !slices.Contains(allowed, imp)) {
				t.Errorf("%s imports %s; it may import only %v and internal helpers", pkg, imp, allowed)
			}
		}
	}
	for pkg := range allowedImports {
		if !seen[pkg] {
			t.Errorf("package %s of the import graph does not exist", pkg)
		}
	}
}

// ours keeps this module's packages, relative to its root.
func ours(imports []string) []string {
	var out []string
	for _, imp := range imports {
		if imp == modulePath || strings.HasPrefix(imp, modulePath+"/") {
			out = append(out, strings.TrimPrefix(strings.TrimPrefix(imp, modulePath), "/"))
		}
	}
	return out
}
