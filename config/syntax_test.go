package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestYAMLSyntaxErrorsAreLocated: a syntax error deep in a file is reported
// at the offending token, not at the block around it, and a byte that is
// not UTF-8 at its own line and column.
func TestYAMLSyntaxErrorsAreLocated(t *testing.T) {
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
	cases := []struct {
		name, yaml string
		want       string
	}{
		{"stray key in a list item", withLine(24, "    «stray"), "not valid YAML"},
		{"key less indented than its mapping", withLine(24, "   «type: vpc"), "not valid YAML"},
		{"unterminated quote", withLine(24, `    type: «"vpc`), "not valid YAML"},
		{"tab indentation", withLine(24, "«\ttype: vpc"), "not valid YAML"},
		{"mapping value in a plain scalar", withLine(24, "    type: «vpc: x"), "not valid YAML"},
		{"invalid UTF-8", "instance:\n  name: x\ngateways:\n  - name: a\n    region: «\xff\xfe\n", "byte 0xff is not UTF-8"},
		{"invalid UTF-8 after wide characters", "# 区域\ninstance: {name: x}  # «\xc3\n", "byte 0xc3 is not UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text, at := locate(t, tc.yaml)
			_, err := Parse("cen.yaml", []byte(text))
			var list ErrorList
			if !errors.As(err, &list) || len(list) != 1 {
				t.Fatalf("Parse: %v; want one located error", err)
			}
			if e := list[0]; e.Pos != at || !strings.Contains(e.Msg, tc.want) {
				t.Errorf("got %s; want %d:%d and %q", e, at.Line, at.Column, tc.want)
			}
		})
	}
}
