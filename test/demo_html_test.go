package test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/lab"
)

// The demo's HTML report (cenctl demo --html), rendered by a real browser:
// headless Chromium loads the page the demo would write for a fixed
// report, and the test checks what it made of it. From the DOM Chromium
// serialises after loading: one chart per measured pair, in order, with
// its regions, figures and labels. From a screenshot: every chart is
// really drawn, its allocation and goodput bars as wide as the figures
// say, all on one scale. From Chromium's log: no console message (the page
// has no script; anything there is a fault). No lab is needed.
func TestDemoHTMLInBrowser(t *testing.T) {
	browser := chromium(t)
	rep := fixedReport()
	dir := t.TempDir()
	page := filepath.Join(dir, "opencen-demo.html")
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	checkDOM(ctx, t, browser, dir, page, rep)
	checkScreenshot(ctx, t, browser, dir, page, rep)
}

// checkDOM checks the DOM Chromium serialises after loading page.
func checkDOM(ctx context.Context, t *testing.T, browser, dir, page string, rep *lab.Report) {
	t.Helper()
	dom, logs := runChromium(ctx, t, browser, dir, "--dump-dom", "file://"+page)
	checkConsole(t, logs)
	doc, err := html.Parse(bytes.NewReader(dom))
	if err != nil {
		t.Fatalf("chromium's DOM does not parse: %v", err)
	}
	checkCharts(t, doc, rep)
	for _, id := range []string{"failures", "default", "failover", "reachability"} {
		if findAll(doc, func(n *html.Node) bool { return attr(n, "id") == id }) == nil {
			t.Errorf("no #%s in the page", id)
		}
	}
	if fo := text(findAll(doc, func(n *html.Node) bool { return attr(n, "id") == "failover" })[0]); !strings.Contains(fo, "cut for 412 ms") {
		t.Errorf("failover paragraph: %q", fo)
	}

}

// checkCharts checks that the DOM doc holds one chart per measured pair of
// rep, in order, with its regions, figures and labels.
func checkCharts(t *testing.T, doc *html.Node, rep *lab.Report) {
	t.Helper()
	figs := findAll(doc, func(n *html.Node) bool { return n.Data == "figure" && hasClass(n, "pair") })
	if len(figs) != len(rep.Pairs) {
		t.Fatalf("%d pair charts in the page, want one per measured pair: %d", len(figs), len(rep.Pairs))
	}
	for i, fig := range figs {
		p := rep.Pairs[i]
		if got := attr(fig, "id"); got != fmt.Sprintf("pair-%d", i) {
			t.Errorf("chart %d: id %q", i, got)
		}
		if attr(fig, "data-family") != p.Family || attr(fig, "data-from") != p.FromRegion || attr(fig, "data-to") != p.ToRegion ||
			attr(fig, "data-allocation-bps") != strconv.FormatUint(p.AllocationBps, 10) ||
			attr(fig, "data-goodput-bps") != fmt.Sprintf("%.0f", p.GoodputBps) {
			t.Errorf("chart %d: data attributes %v, want %s -> %s %d / %.0f", i, fig.Attr, p.FromRegion, p.ToRegion, p.AllocationBps, p.GoodputBps)
		}
		caption := text(first(fig, "figcaption"))
		for _, want := range []string{
			p.FromRegion + " → " + p.ToRegion + " over " + lab.FamilyTitle(p.Family) + ":",
			fmt.Sprintf("%.2f Mbps of %s", p.GoodputBps/1e6, config.Bandwidth(p.AllocationBps)),
			fmt.Sprintf("(%.3f)", p.Ratio),
			"package " + p.Package,
			p.Error,
		} {
			if !strings.Contains(caption, want) {
				t.Errorf("chart %d: caption %q lacks %q", i, caption, want)
			}
		}
		svgs := findAll(fig, func(n *html.Node) bool { return n.Data == "svg" })
		if len(svgs) != 1 || svgs[0].Namespace != "svg" {
			t.Errorf("chart %d: %d svg elements, want one in the SVG namespace", i, len(svgs))
			continue
		}
		chart := text(svgs[0])
		for _, want := range []string{"allocation", "goodput", config.Bandwidth(p.AllocationBps).String(), fmt.Sprintf("%.2f Mbps", p.GoodputBps/1e6)} {
			if !strings.Contains(chart, want) {
				t.Errorf("chart %d: drawing's labels %q lack %q", i, chart, want)
			}
		}
		if rects := findAll(svgs[0], func(n *html.Node) bool { return n.Data == "rect" }); len(rects) != 2 {
			t.Errorf("chart %d: %d bars, want 2", i, len(rects))
		}
	}
}

// checkScreenshot checks a screenshot of page: every chart is drawn, its
// bars as wide as the figures say, all on one scale.
func checkScreenshot(ctx context.Context, t *testing.T, browser, dir, page string, rep *lab.Report) {
	t.Helper()
	shot := filepath.Join(dir, "page.png")
	_, logs := runChromium(ctx, t, browser, dir, "--screenshot="+shot, "--window-size=1000,3600",
		"--force-device-scale-factor=1", "--hide-scrollbars", "file://"+page)
	checkConsole(t, logs)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	alloc := bars(img, lab.ChartAllocationColor)
	good := bars(img, lab.ChartGoodputColor)
	if len(alloc) != len(rep.Pairs) {
		t.Fatalf("screenshot shows %d allocation bars, want %d (one per pair): %v", len(alloc), len(rep.Pairs), alloc)
	}
	scale := 1.0
	for _, p := range rep.Pairs {
		scale = max(scale, float64(p.AllocationBps), p.GoodputBps)
	}
	var drawn []lab.PairMeasure // pairs whose goodput bar is visible
	for _, p := range rep.Pairs {
		if lab.ChartBarMax*p.GoodputBps/scale >= 2 {
			drawn = append(drawn, p)
		}
	}
	if len(good) != len(drawn) {
		t.Fatalf("screenshot shows %d goodput bars, want %d: %v", len(good), len(drawn), good)
	}
	for i, p := range rep.Pairs {
		want := lab.ChartBarMax * float64(p.AllocationBps) / scale
		if a := alloc[i]; math.Abs(float64(a.width)-want) > 2 {
			t.Errorf("pair %d (%s -> %s): allocation bar %d px wide, want %.1f", i, p.FromRegion, p.ToRegion, a.width, want)
		}
	}
	// One scale: every bar starts at the same x.
	for _, b := range append(alloc[1:], good...) {
		if b.x0 != alloc[0].x0 {
			t.Errorf("a bar starts at x %d, the first at %d: the charts are not aligned", b.x0, alloc[0].x0)
		}
	}
	gi := 0
	for i, p := range rep.Pairs {
		if gi >= len(good) || lab.ChartBarMax*p.GoodputBps/scale < 2 {
			continue
		}
		g := good[gi]
		gi++
		want := lab.ChartBarMax * p.GoodputBps / scale
		if math.Abs(float64(g.width)-want) > 2 {
			t.Errorf("pair %d (%s -> %s): goodput bar %d px wide, want %.1f", i, p.FromRegion, p.ToRegion, g.width, want)
		}
		// The goodput bar sits just below its own pair's allocation bar.
		if g.y0 <= alloc[i].y0 || g.y0-alloc[i].y0 > 40 {
			t.Errorf("pair %d: goodput bar at y %d is not under its allocation bar at y %d", i, g.y0, alloc[i].y0)
		}
	}
}

// fixedReport is a demo report of the shipped lab's shape: ten measured
// directions in each family (one failed, one far below its allocation),
// IPv4 and IPv6 at once on one pair, the default pair, a failover and a
// failure.
func fixedReport() *lab.Report {
	type d struct {
		from, to, pkg string
		alloc         uint64
		good          float64
		err           string
	}
	var pairs []lab.PairMeasure
	for _, x := range []d{
		{"cn-beijing", "cn-shanghai", "bwp-china", 40e6, 38.9e6, ""},
		{"cn-shanghai", "cn-beijing", "bwp-china", 40e6, 39.4e6, ""},
		{"cn-beijing", "us-west-1", "bwp-china-na", 20e6, 19.3e6, ""},
		{"us-west-1", "cn-beijing", "bwp-china-na", 20e6, 9.65e6, ""},
		{"cn-beijing", "eu-central-1", "bwp-china-europe", 15e6, 14.6e6, ""},
		{"eu-central-1", "cn-beijing", "bwp-china-europe", 15e6, 14.7e6, ""},
		{"cn-shanghai", "us-west-1", "bwp-china-na", 10e6, 9.81e6, ""},
		{"us-west-1", "cn-shanghai", "bwp-china-na", 10e6, 0, "iperf3 vpc-siliconvalley -> vpc-shanghai: unable to connect"},
		{"cn-shanghai", "eu-central-1", "bwp-china-europe", 5e6, 4.87e6, ""},
		{"eu-central-1", "cn-shanghai", "bwp-china-europe", 5e6, 4.9e6, ""},
	} {
		for _, fam := range []string{lab.FamilyIPv4, lab.FamilyIPv6} {
			good := x.good
			if fam == lab.FamilyIPv6 {
				good *= 0.98 // IPv6 headers are 20 bytes longer
			}
			pairs = append(pairs, lab.PairMeasure{Family: fam, FromRegion: x.from, ToRegion: x.to, From: "vpc-" + x.from, To: "vpc-" + x.to,
				AllocationBps: x.alloc, Package: x.pkg, GoodputBps: good, Ratio: good / float64(x.alloc), Error: x.err})
		}
	}
	pairs = append(pairs, lab.PairMeasure{Family: lab.FamilyBoth, FromRegion: "cn-shanghai", ToRegion: "cn-beijing", From: "vpc-shanghai", To: "vpc-beijing",
		AllocationBps: 40e6, Package: "bwp-china", GoodputBps: 38.6e6, Ratio: 38.6e6 / 40e6,
		ByFamily: []lab.FamilyGoodput{{Family: lab.FamilyIPv4, GoodputBps: 19.9e6}, {Family: lab.FamilyIPv6, GoodputBps: 18.7e6}}})
	return &lab.Report{
		Instance:  "cen-lab",
		StartedAt: time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC),
		Duration:  131,
		Reachability: []lab.Reach{
			{Family: lab.FamilyIPv4, From: "vpc-beijing", To: "vpc-shanghai", Sent: 3, Received: 3, RTTms: 0.41},
			{Family: lab.FamilyIPv4, From: "vpc-siliconvalley", To: "vpc-shanghai", Sent: 3, Received: 3, RTTms: 0.52},
			{Family: lab.FamilyIPv6, From: "vpc-beijing", To: "vpc-shanghai", Sent: 3, Received: 3, RTTms: 0.43},
		},
		Pairs:    pairs,
		Default:  &lab.DefaultPair{Regions: [2]string{"us-west-1", "eu-central-1"}, PingSent: 3, PingReceived: 3, PingSent6: 3, PingReceived6: 3, GoodputBps: 930},
		Failover: &lab.FailoverTrial{Gateway: "gw-beijing-1", From: "vpc-shanghai", To: "vpc-beijing", Flows: 16, IntervalMs: 10, Interrupted: 12, Sent: 6400, Lost: 41, OutageMs: 412, Recovered: true},
		Failures: []string{"us-west-1 -> cn-shanghai: iperf3 vpc-siliconvalley -> vpc-shanghai: unable to connect"},
	}
}

// chromium finds the browser. Missing, the test skips on a developer's
// machine and fails in CI (CI=true), which installs it (.ci/run).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "no headless browser: install chromium (Debian: apt-get install chromium) to check the demo's HTML report"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI installs it in .ci/run, so this is a broken CI image")
	}
	t.Skip(msg)
	return ""
}

// runChromium runs one headless Chromium with a profile of its own (no
// sandbox: the suite runs as root) and returns its stdout and its log.
func runChromium(ctx context.Context, t *testing.T, browser, dir string, args ...string) (stdout, log []byte) {
	t.Helper()
	profile, err := os.MkdirTemp(dir, "profile-")
	if err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir=" + profile, "--enable-logging=stderr", "--v=0"}, args...)
	cmd := exec.CommandContext(ctx, browser, argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", browser, strings.Join(args, " "), err, tail(errb.String(), 2000))
	}
	return out.Bytes(), errb.Bytes()
}

var consoleLine = regexp.MustCompile(`(?m)^.*:CONSOLE[:(].*$|^.*Uncaught.*$`)

// checkConsole fails on anything the page said on the console: it has no
// script, so a message is an error (a CSP refusal, a broken resource).
func checkConsole(t *testing.T, log []byte) {
	t.Helper()
	if m := consoleLine.FindAll(log, -1); len(m) > 0 {
		t.Errorf("the page wrote to the console:\n%s", bytes.Join(m, []byte("\n")))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// bar is one horizontal bar found in a screenshot.
type bar struct{ y0, x0, width int }

// bars finds the bars of one fill colour, top to bottom: runs of rows that
// hold the colour, measured on their middle row (the widest run of exactly
// that colour; the right edge may be blended by antialiasing).
func bars(img image.Image, hex string) []bar {
	want := parseHex(hex)
	b := img.Bounds()
	rowRun := func(y int) (x0, n int) {
		bestX, best, cur, start := 0, 0, 0, 0
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if uint8(r>>8) == want.R && uint8(g>>8) == want.G && uint8(bl>>8) == want.B {
				if cur == 0 {
					start = x
				}
				cur++
				if cur > best {
					best, bestX = cur, start
				}
			} else {
				cur = 0
			}
		}
		return bestX, best
	}
	var out []bar
	for y := b.Min.Y; y < b.Max.Y; y++ {
		if _, n := rowRun(y); n == 0 {
			continue
		}
		y0 := y
		for y < b.Max.Y {
			if _, n := rowRun(y); n == 0 {
				break
			}
			y++
		}
		x0, n := rowRun((y0 + y - 1) / 2)
		out = append(out, bar{y0: y0, x0: x0, width: n})
	}
	return out
}

func parseHex(s string) color.RGBA {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "#"), 16, 32)
	return color.RGBA{R: uint8(v >> 16), G: uint8(v >> 8), B: uint8(v), A: 255}
}

func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func first(n *html.Node, tag string) *html.Node {
	if all := findAll(n, func(c *html.Node) bool { return c.Data == tag }); len(all) > 0 {
		return all[0]
	}
	return nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	return strings.Contains(" "+attr(n, "class")+" ", " "+class+" ")
}

func text(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}
