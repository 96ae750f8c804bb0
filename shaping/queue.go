package shaping

import (
	"sync"
	"time"
)

// regionQueues are the packets the userspace shaper admitted with a
// delay: a FIFO a region, so no region waits behind another's backlog.
type regionQueues struct {
	byRegion map[string]*pktQueue
	order    []string // regions with a queue, in the order made
}

// pktQueue is one region's packets waiting for their time, in order.
type pktQueue struct {
	pkts []queued
	head int
}

type queued struct {
	due  time.Time
	data *[]byte
}

var pktPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// empty reports whether no packet of region waits.
func (rq *regionQueues) empty(region string) bool {
	q := rq.byRegion[region]
	return q == nil || q.len() == 0
}

// push queues a copy of p for region, due at due.
func (rq *regionQueues) push(region string, p []byte, due time.Time) {
	q := rq.byRegion[region]
	if q == nil {
		q = &pktQueue{}
		rq.byRegion[region] = q
		rq.order = append(rq.order, region)
	}
	b := pktPool.Get().(*[]byte)
	*b = append((*b)[:0], p...)
	q.pkts = append(q.pkts, queued{due: due, data: b})
}

// release copies the queued packets due by now into bufs, as many as fit.
func (rq *regionQueues) release(now time.Time, bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for _, region := range rq.order {
		q := rq.byRegion[region]
		for n < len(bufs) && q.len() > 0 && !q.pkts[q.head].due.After(now) {
			p := q.pop()
			if len(bufs[n])-offset >= len(*p.data) {
				sizes[n] = copy(bufs[n][offset:], *p.data)
				n++
			}
			pktPool.Put(p.data)
		}
	}
	return n
}

// nextDue is the earliest time a queued packet is due; zero when none is
// queued.
func (rq *regionQueues) nextDue() time.Time {
	var next time.Time
	for _, q := range rq.byRegion {
		if q.len() > 0 && (next.IsZero() || next.After(q.pkts[q.head].due)) {
			next = q.pkts[q.head].due
		}
	}
	return next
}

func (q *pktQueue) len() int { return len(q.pkts) - q.head }

func (q *pktQueue) pop() queued {
	p := q.pkts[q.head]
	q.pkts[q.head] = queued{}
	q.head++
	if q.head == len(q.pkts) {
		q.pkts, q.head = q.pkts[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.pkts) {
		q.pkts = append(q.pkts[:0], q.pkts[q.head:]...)
		q.head = 0
	}
	return p
}
