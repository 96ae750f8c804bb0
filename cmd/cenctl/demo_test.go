package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/lab"
)

func sampleReport() *lab.Report {
	return &lab.Report{
		Instance:  "cen-lab",
		StartedAt: time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC),
		Duration:  95,
		Reachability: []lab.Reach{
			{From: "vpc-a", Gateway: "gw-a1", To: "vpc-b", Paths: 2, Sent: 6, Received: 6, RTTms: 0.5},
			{From: "vpc-a", Gateway: "gw-a2", To: "vpc-b", Paths: 2, Sent: 6, Received: 6, RTTms: 0.7},
			{From: "vpc-b", Gateway: "gw-b1", To: "vpc-a", Paths: 4, Sent: 12, Received: 10, RTTms: 0.6},
		},
		Pairs: []lab.PairMeasure{
			{FromRegion: "cn-beijing", ToRegion: "us-west-1", AllocationBps: 20_000_000, Package: "bwp-china-na", GoodputBps: 19_300_000, Ratio: 0.965},
			{FromRegion: "us-west-1", ToRegion: "cn-beijing", AllocationBps: 20_000_000, Package: "bwp-china-na", GoodputBps: 9_650_000, Ratio: 0.4825},
		},
		Default: &lab.DefaultPair{Regions: [2]string{"eu-central-1", "us-west-1"}, PingSent: 3, PingReceived: 3, GoodputBps: 950},
		Failover: &lab.FailoverTrial{Gateway: "gw-beijing-1", From: "vpc-shanghai", To: "vpc-beijing", Flows: 16, IntervalMs: 10,
			Interrupted: 9, Sent: 6400, Lost: 31, OutageMs: 310, Recovered: true},
		Failures: []string{"vpc-b -> vpc-a: 1 of 3 pings answered"},
	}
}

func TestReportText(t *testing.T) {
	var b bytes.Buffer
	printReport(&b, sampleReport())
	for _, want := range []string{
		"opencen demo: instance cen-lab, 1m35s",
		"vpc-a via gw-a2  -           ok 0.7ms",
		"vpc-b via gw-b1  FAIL 10/12",
		"cn-beijing  us-west-1   20Mbps      bwp-china-na  19.30Mbps  0.965",
		"Default pair eu-central-1 <-> us-west-1 (1 Kbps, no package): ping 3/3 answered; bulk TCP 950bps",
		"gw-beijing-1 killed under 16 UDP flows vpc-shanghai -> vpc-beijing, 9 of them through it: the worst was cut for 310 ms (lost 31 packets)",
		"Not as expected:\n  - vpc-b -> vpc-a: 1 of 3 pings answered",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestReportHTML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.html")
	if err := writeHTMLReport(path, sampleReport()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	page := string(b)
	for _, want := range []string{
		`<figure class="pair" id="pair-0" data-from="cn-beijing" data-to="us-west-1" data-allocation-bps="20000000" data-goodput-bps="19300000">`,
		`<rect class="allocation" x="90" y="5" height="16" width="360.0"`, // the largest value fills the scale
		`<rect class="goodput" x="90" y="29" height="16" width="347.4"`,
		`<rect class="goodput" x="90" y="29" height="16" width="173.7"`,
		`<text class="value" x="443.4" y="41">19.30 Mbps</text>`,
		`<li class="fail">vpc-b -&gt; vpc-a: 1 of 3 pings answered</li>`,
		`9 flows crossed it; the worst was cut for 310 ms (lost 31 packets)`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
