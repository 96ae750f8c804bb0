package agent

import (
	"context"
	"sync"
	"time"

	"github.com/opencen/opencen/shaping"
)

// rateTracker turns the shaper's cumulative counters into a current rate
// per destination region, sampled once a second.
type rateTracker struct {
	mu     sync.Mutex
	last   map[string]shaping.Counters
	lastAt time.Time
	rate   map[string]float64 // bits per second over the last interval
}

// rateSample is what the tracker last observed.
type rateSample struct {
	counters map[string]shaping.Counters
	rates    map[string]float64
	at       time.Time // when the counters are read
}

func newRateTracker() *rateTracker {
	return &rateTracker{last: map[string]shaping.Counters{}, rate: map[string]float64{}}
}

func (t *rateTracker) observe(now time.Time, c map[string]shaping.Counters) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lastAt.IsZero() {
		dt := now.Sub(t.lastAt).Seconds()
		for region, cur := range c {
			prev, ok := t.last[region]
			if !ok || cur.PassedBytes < prev.PassedBytes || dt <= 0 {
				t.rate[region] = 0
				continue
			}
			t.rate[region] = float64(cur.PassedBytes-prev.PassedBytes) * 8 / dt
		}
	}
	for region := range t.rate {
		if _, ok := c[region]; !ok {
			delete(t.rate, region)
		}
	}
	t.last, t.lastAt = c, now
}

func (t *rateTracker) snapshot() rateSample {
	t.mu.Lock()
	defer t.mu.Unlock()
	rates := make(map[string]float64, len(t.rate))
	for k, v := range t.rate {
		rates[k] = v
	}
	return rateSample{counters: t.last, rates: rates, at: t.lastAt}
}

func (a *Agent) sampleRates(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c, err := a.sh.Counters()
			if err != nil {
				a.log.Debug("read shaper counters", "err", err)
				continue
			}
			// The time of the read, not of the tick: on a busy host the
			// read may come tens of milliseconds late, and a rate over the
			// tick times would be off by as much.
			a.rates.observe(time.Now(), c)
		}
	}
}
