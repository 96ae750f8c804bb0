package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// manyNetworks is a valid config of n VPCs over four regions, one gateway
// each: a /26 of 10.0.0.0/8 per VPC, and every tenth also an IPv6 /56.
func manyNetworks(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`instance: {name: cen-big}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: 192.0.2.11:51820, public_key: WsxjPdxndRzjSJQRpLifr4dH07bDVcRyp/GekpUTDC4=, private_key_file: k1}
  - {name: gw-sh, region: cn-shanghai, endpoint: 192.0.2.31:51820, public_key: IUxMbzVG4OKSpRAMV5cRCKu36C5vBNatvFMwlbONYyQ=, private_key_file: k2}
  - {name: gw-sv, region: us-west-1, endpoint: 198.51.100.21:51820, public_key: LP7VSgVVjavtTu6hWRJ1daWB79WfoG91NmZtAqp8ggg=, private_key_file: k3}
  - {name: gw-fr, region: eu-central-1, endpoint: 203.0.113.5:51820, public_key: VDHR/2EvViHhn5NBuNtwhYGJyc+fM9/kz8vlZauuqkE=, private_key_file: k4}
networks:
`)
	regions := []string{"cn-beijing", "cn-shanghai", "us-west-1", "eu-central-1"}
	for i := range n {
		a := i << 6 // a /26 each
		fmt.Fprintf(&b, "  - {name: vpc-%d, type: vpc, region: %s, cidrs: [10.%d.%d.%d/26", i, regions[i%len(regions)], a>>16&255, a>>8&255, a&255)
		if i%10 == 0 {
			fmt.Fprintf(&b, `, "fd00:%x:%x::/56"`, i>>8, (i&255)<<8)
		}
		b.WriteString("]}\n")
	}
	return b.Bytes()
}

// validate100kBudget is what cenctl validate of 100,000 networks may
// take (the bound): an overlap check over pairs spends minutes.
const validate100kBudget = 2 * time.Second

// TestValidate100k: cenctl validate of an instance of 100,000 VPCs is
// done within validate100kBudget of CPU, this process's threads (the
// garbage collector's too) added up. CPU time rather than the wall clock:
// on a shared machine other jobs stretch the wall clock, not this.
func TestValidate100k(t *testing.T) {
	file := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(file, manyNetworks(100_000), 0o600); err != nil {
		t.Fatal(err)
	}
	before := cpuTime(t)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"validate", file}, &stdout, &stderr); code != 0 {
		t.Fatalf("cenctl validate: exit %d: %s", code, stderr.Bytes())
	}
	spent := cpuTime(t) - before
	t.Logf("cenctl validate of 100,000 networks: %v of CPU", spent)
	if spent > validate100kBudget {
		t.Errorf("cenctl validate of 100,000 networks took %v of CPU, want under %v", spent, validate100kBudget)
	}
	if !bytes.Contains(stdout.Bytes(), []byte("valid.")) {
		t.Errorf("cenctl validate: %s", stdout.Bytes())
	}
}

// cpuTime is the user and system CPU time this process has spent.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkValidate100k: cenctl validate of an instance of 100,000 VPCs,
// beside decoding the same file's YAML alone (the floor any validation
// stands on), in the same run.
func BenchmarkValidate100k(b *testing.B) {
	const n = 100_000
	file := filepath.Join(b.TempDir(), "big.yaml")
	data := manyNetworks(n)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		b.Fatal(err)
	}
	var validate, decode time.Duration
	for b.Loop() {
		start := time.Now()
		var stderr bytes.Buffer
		if code := run([]string{"validate", file}, io.Discard, &stderr); code != 0 {
			b.Fatalf("cenctl validate: exit %d: %s", code, stderr.Bytes())
		}
		validate += time.Since(start)
		start = time.Now()
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			b.Fatal(err)
		}
		decode += time.Since(start)
	}
	b.ReportMetric(validate.Seconds()/float64(b.N), "validate-s")
	b.ReportMetric(decode.Seconds()/float64(b.N), "yaml-decode-s")
	b.ReportMetric(float64(validate)/float64(decode), "ratio-vs-yaml-decode")
}
