package dataplane

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// TestMain doubles as the helper binary: the dataplane under test runs
// [test binary, "wireguard-device", ...] exactly as the agent will run
// [/proc/self/exe, "wireguard-device", ...]. It also hosts the second
// process of the adoption test.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "wireguard-device" {
		os.Exit(testHelper(os.Args[2:]))
	}
	if f := os.Getenv(adoptEnv); f != "" {
		os.Exit(adoptChild(f))
	}
	os.Exit(m.Run())
}

// testHelper is the helper process of the tests: the argv contract of
// Options.HelperCommand ("--device NAME --mtu N"), served as cend serves
// it, without a shaper, until SIGTERM or SIGINT.
func testHelper(args []string) int {
	fs := flag.NewFlagSet("wireguard-device", flag.ContinueOnError)
	name := fs.String("device", "", "")
	mtu := fs.Int("mtu", defaultMTU, "")
	if err := fs.Parse(args); err != nil || *name == "" {
		fmt.Fprintln(os.Stderr, "wireguard-device: --device NAME [--mtu N]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := ServeUserspaceDevice(ctx, HelperOptions{Device: *name, MTU: *mtu, Logger: log}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
