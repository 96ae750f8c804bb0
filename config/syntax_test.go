package config

import (
	"os"
	"strings"
	"testing"
)

// yamlSyntaxCases are YAML syntax errors deep in a file, each reported at
// the offending token, not at the block around it, and bytes that are
// not UTF-8, each at its own line and column (TestValidationErrorsAreLocated
// runs them).
func yamlSyntaxCases(t *testing.T) []locatedCase {
	t.Helper()
	small, err := os.ReadFile("../examples/small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(small), "\n")
	// withLine is examples/small.yaml with line n (1-based) replaced.
	withLine := func(n int, text string) string {
		l := append([]string(nil), lines...)
		l[n-1] = text + "\n"
		return strings.Join(l, "")
	}
	return []locatedCase{
		{"stray key in a list item", withLine(24, "    «stray"), "not valid YAML"},
		{"key less indented than its mapping", withLine(24, "   «type: vpc"), "not valid YAML"},
		{"unterminated quote", withLine(24, `    type: «"vpc`), "not valid YAML"},
		{"tab indentation", withLine(24, "«\ttype: vpc"), "not valid YAML"},
		{"mapping value in a plain scalar", withLine(24, "    type: «vpc: x"), "not valid YAML"},
		{"invalid UTF-8", "instance:\n  name: x\ngateways:\n  - name: a\n    region: «\xff\xfe\n", "byte 0xff is not UTF-8"},
		{"invalid UTF-8 after wide characters", "# 区域\ninstance: {name: x}  # «\xc3\n", "byte 0xc3 is not UTF-8"},
	}
}
