package lab

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports: the lab is product code that cenctl runs. Of opencen's
// packages it imports only agent/api (to talk to the agents), config and
// internal helpers, never internal/testutil, which is for tests: the
// import graph is cmd/cenctl -> lab -> {agent/api, config}.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	const module = "github.com/opencen/opencen"
	for _, pkg := range strings.Fields(string(out)) {
		rel, ours := strings.CutPrefix(pkg, module+"/")
		if !ours {
			continue
		}
		switch {
		case rel == "lab", rel == "agent/api", rel == "config":
		case strings.HasPrefix(rel, "internal/") && rel != "internal/testutil":
		default:
			t.Errorf("the lab depends on %s", pkg)
		}
	}
}
