package agent

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
)

// TestReloadsReportAChangeOnce: reloads that race (SIGHUP's and the
// socket's) run one at a time, so one change of the file is applied and
// reported once; the others find nothing changed and each has a
// generation of its own.
func TestReloadsReportAChangeOnce(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	var logs bytes.Buffer
	a, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	if err := os.WriteFile(path, []byte(strings.Replace(string(good), "bandwidth: 50Mbps", "bandwidth: 80Mbps", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 8
	results := make([]api.ReloadResult, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = a.Reload(context.Background())
		}()
	}
	close(start)
	wg.Wait()
	changed, gens := 0, map[int]bool{}
	for _, r := range results {
		if !r.Applied || len(r.Errors) > 0 {
			t.Errorf("reload = %+v", r)
		}
		if len(r.Changes) > 0 {
			changed++
		}
		gens[r.Generation] = true
	}
	if changed != 1 || len(gens) != n {
		t.Errorf("%d of %d racing reloads reported the change, with %d distinct generations; want 1 and %d", changed, n, len(gens), n)
	}
}

// blockingSource blocks Reload until release closes, and records whether
// the context it was given ended meanwhile.
type blockingSource struct {
	fakeSource
	entered, release chan struct{}
	mu               sync.Mutex
	canceled         error
}

func (b *blockingSource) Reload(ctx context.Context) api.ReloadResult {
	close(b.entered)
	<-b.release
	b.mu.Lock()
	b.canceled = ctx.Err()
	b.mu.Unlock()
	return api.ReloadResult{Applied: true, Generation: 2}
}

// TestReloadOutlivesItsClient: a client that goes away during a reload
// (cenctl's timeout, an interrupted cenctl) does not cancel it: the
// config is swapped in before the reconcile, so a reconcile cut short
// would leave it half applied.
func TestReloadOutlivesItsClient(t *testing.T) {
	path := t.TempDir() + "/cend.sock"
	src := &blockingSource{entered: make(chan struct{}), release: make(chan struct{})}
	var logs bytes.Buffer
	cs, err := ListenControl(path, src, testLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	go cs.Serve()
	defer cs.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := api.NewClient(path).Reload(ctx); done <- err }()
	select {
	case <-src.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the reload did not reach the source")
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the client's reload returned without error though it was cancelled")
	}
	// The server notices the closed connection and would cancel the
	// request's context within moments.
	time.Sleep(300 * time.Millisecond)
	close(src.release)
	time.Sleep(100 * time.Millisecond)
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.canceled != nil {
		t.Errorf("the reload's context ended with its client: %v", src.canceled)
	}
}
