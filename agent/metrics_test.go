package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestInfoMetrics: opencen_build_info carries the binary's version and
// commit, opencen_config_info the instance and the digest of the file in
// use, which differs as soon as the file does.
func TestInfoMetrics(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	if _, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs), Registerer: reg,
		Build: BuildInfo{Version: "v1.2.3-4-gabcdef0", Commit: "abcdef0"}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]string{}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			if f.GetName() != "opencen_build_info" && f.GetName() != "opencen_config_info" {
				continue
			}
			if m.GetGauge().GetValue() != 1 {
				t.Errorf("%s = %v, want 1", f.GetName(), m.GetGauge().GetValue())
			}
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[f.GetName()] = labels
		}
	}
	if b := got["opencen_build_info"]; b["version"] != "v1.2.3-4-gabcdef0" || b["commit"] != "abcdef0" {
		t.Errorf("opencen_build_info %v", b)
	}
	if c := got["opencen_config_info"]; c["cen"] != "t" || c["digest"] != hex.EncodeToString(sum[:8]) {
		t.Errorf("opencen_config_info %v, want digest %x", c, sum[:8])
	}
}

// brokenCollector is a source that fails every scrape.
type brokenCollector struct{ d *prometheus.Desc }

func (b brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.d }
func (b brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(b.d, errors.New("the source is down"))
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsEndpoint: a source that fails loses its series, not the
// scrape; a scrape of an agent that has not run yet serves what it knows;
// the agent's series are its own.
func TestMetricsEndpoint(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	if _, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs), Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(brokenCollector{prometheus.NewDesc("opencen_test_broken", "A source that fails.", nil, nil)})
	m, err := ServeMetrics("127.0.0.1:0", reg, testLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	code, body := get(t, fmt.Sprintf("http://%s/metrics", m.Addr()))
	if code != http.StatusOK {
		t.Fatalf("scrape with a failing source: %d\n%s", code, body)
	}
	for _, want := range []string{"opencen_config_generation 1", `opencen_shaper_allocation_bits_per_second{dst_region="us-west-1",src_region="cn-beijing"} 5e+07`} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "opencen_test_broken") {
		t.Errorf("the failing source's series is in the scrape:\n%s", body)
	}
	if !strings.Contains(logs.String(), "the source is down") {
		t.Errorf("the failing source is not logged:\n%s", logs.String())
	}
}

// slowGatherer holds each scrape until release closes, counting them.
type slowGatherer struct {
	mu      sync.Mutex
	in      int
	release chan struct{}
}

func (g *slowGatherer) Describe(ch chan<- *prometheus.Desc) {}
func (g *slowGatherer) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	g.in++
	g.mu.Unlock()
	<-g.release
}

// TestMetricsScrapesBounded: at most metricsInFlight scrapes gather at
// once; one more is answered 503 at once instead of queueing.
func TestMetricsScrapesBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	slow := &slowGatherer{release: make(chan struct{})}
	reg.MustRegister(slow)
	var logs bytes.Buffer
	m, err := ServeMetrics("127.0.0.1:0", reg, testLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	url := fmt.Sprintf("http://%s/metrics", m.Addr())
	var wg sync.WaitGroup
	for range metricsInFlight {
		wg.Add(1)
		go func() { defer wg.Done(); get(t, url) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		slow.mu.Lock()
		in := slow.in
		slow.mu.Unlock()
		if in == metricsInFlight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d scrapes gathering, want %d", in, metricsInFlight)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	code, _ := get(t, url)
	if code != http.StatusServiceUnavailable || time.Since(start) > time.Second {
		t.Errorf("a scrape beyond the bound: %d after %v, want 503 at once", code, time.Since(start))
	}
	close(slow.release)
	wg.Wait()
}
