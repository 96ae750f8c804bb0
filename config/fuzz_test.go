package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds the decoder and validator arbitrary files. It must never
// panic; a rejected file gets located errors that point inside it; an
// accepted one yields a matrix and a desired state for every gateway.
// Seeds: testdata/fuzz/FuzzLoad and the shipped examples.
func FuzzLoad(f *testing.F) {
	examples, _ := filepath.Glob("../examples/*.yaml")
	for _, path := range append(examples, "testdata/five-mistakes.yaml") {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is not a non-empty ErrorList: %v", err)
			}
			// YAML breaks lines at \n, \r\n and a lone \r.
			lines := strings.Count(string(data), "\n") + strings.Count(string(data), "\r") + 2
			for _, e := range list {
				if e.Pos.Line < 0 || e.Pos.Line > lines || e.Pos.Column < 0 {
					t.Fatalf("error points outside the file (%d lines): %v", lines, e)
				}
				if e.Msg == "" {
					t.Fatal("error with no message")
				}
			}
			return
		}
		for _, p := range cfg.Matrix() {
			if p.Bandwidth == 0 || p.Regions[0] >= p.Regions[1] {
				t.Fatalf("bad matrix row %+v", p)
			}
		}
		for _, g := range cfg.Gateways {
			d, err := cfg.Desired(g.Name, DesiredOptions{})
			if err != nil {
				t.Fatalf("valid config, but no desired state for %s: %v", g.Name, err)
			}
			for _, e := range d.Egress {
				if e.Rate == 0 || e.Rate > e.PairRate {
					t.Fatalf("bad egress rate %+v", e)
				}
			}
		}
		if MakePlan(cfg, cfg).Changed() {
			t.Fatal("a config planned against itself changes something")
		}
	})
}
