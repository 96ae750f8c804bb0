package dataplane

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// TestMain doubles as the helper binary: the dataplane under test runs
// [test binary, "wireguard-device", ...] exactly as the agent will run
// [/proc/self/exe, "wireguard-device", ...]. It also hosts the second
// process of the adoption test.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "wireguard-device" {
		if err := RunHelper(context.Background(), os.Args[2:], os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if f := os.Getenv(adoptEnv); f != "" {
		os.Exit(adoptChild(f))
	}
	os.Exit(m.Run())
}
