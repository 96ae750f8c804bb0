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
			{Family: "ipv4", From: "vpc-a", Gateway: "gw-a1", To: "vpc-b", Paths: 2, Sent: 6, Received: 6, RTTms: 0.5},
			{Family: "ipv4", From: "vpc-a", Gateway: "gw-a2", To: "vpc-b", Paths: 2, Sent: 6, Received: 6, RTTms: 0.7},
			{Family: "ipv4", From: "vpc-b", Gateway: "gw-b1", To: "vpc-a", Paths: 4, Sent: 12, Received: 10, RTTms: 0.6},
			{Family: "ipv6", From: "vpc-a", Gateway: "gw-a1", To: "vpc-b", Paths: 2, Sent: 6, Received: 6, RTTms: 0.8},
			{Family: "ipv6", From: "vpc-b", Gateway: "gw-b1", To: "vpc-a", Paths: 4, Sent: 12, Received: 11, RTTms: 0.9},
		},
		Pairs: []lab.PairMeasure{
			{Family: "ipv4", FromRegion: "cn-beijing", ToRegion: "us-west-1", AllocationBps: 20_000_000, Package: "bwp-china-na", GoodputBps: 19_300_000, Ratio: 0.965},
			{Family: "ipv4", FromRegion: "us-west-1", ToRegion: "cn-beijing", AllocationBps: 20_000_000, Package: "bwp-china-na", GoodputBps: 9_650_000, Ratio: 0.4825},
			{Family: "ipv6", FromRegion: "cn-beijing", ToRegion: "us-west-1", AllocationBps: 20_000_000, Package: "bwp-china-na", GoodputBps: 19_100_000, Ratio: 0.955},
			{Family: "ipv4+ipv6", FromRegion: "us-west-1", ToRegion: "cn-beijing", AllocationBps: 20_000_000, Package: "bwp-china-na", GoodputBps: 19_200_000, Ratio: 0.96,
				ByFamily: []lab.FamilyGoodput{{Family: "ipv4", GoodputBps: 9_700_000}, {Family: "ipv6", GoodputBps: 9_500_000}}},
		},
		Default: &lab.DefaultPair{Regions: [2]string{"eu-central-1", "us-west-1"}, PingSent: 3, PingReceived: 3, PingSent6: 3, PingReceived6: 2, GoodputBps: 950},
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
		"Reachability over IPv4 (ping over every path",
		"vpc-a via gw-a2  -           ok 0.7ms",
		"vpc-b via gw-b1  FAIL 10/12",
		"Reachability over IPv6 (ping over every path",
		"vpc-a via gw-a1  -           ok 0.8ms",
		"vpc-b via gw-b1  FAIL 11/12",
		"cn-beijing  us-west-1   IPv4       20Mbps      bwp-china-na  19.30Mbps                        0.965",
		"cn-beijing  us-west-1   IPv6       20Mbps      bwp-china-na  19.10Mbps                        0.955",
		"us-west-1   cn-beijing  IPv4+IPv6  20Mbps      bwp-china-na  9.70Mbps + 9.50Mbps = 19.20Mbps  0.960",
		"Default pair eu-central-1 <-> us-west-1 (1 Kbps, no package): ping 3/3 answered, over IPv6 2/3; bulk TCP 950bps",
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
		`<figure class="pair" id="pair-0" data-family="ipv4" data-from="cn-beijing" data-to="us-west-1" data-allocation-bps="20000000" data-goodput-bps="19300000">`,
		`<figcaption>cn-beijing &rarr; us-west-1 over IPv6: 19.10 Mbps of 20Mbps (0.955)`,
		`<figcaption>us-west-1 &rarr; cn-beijing over IPv4&#43;IPv6: IPv4 9.70 Mbps + IPv6 9.50 Mbps = 19.20 Mbps of 20Mbps (0.960)`,
		`<tr data-family="ipv6"><td>IPv6</td><td>vpc-b</td><td>gw-b1</td><td>vpc-a</td><td>4</td><td class="fail">11/12</td>`,
		`ping 3/3 answered, over IPv6 2/3;`,
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
