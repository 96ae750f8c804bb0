package shaping

import "sort"

// Tuning of allocate.
const (
	busyUse   = 0.95 // a leaf that sent this part of its ceiling is held by it
	saturated = 0.9  // the devices together sent this part of the rate: all of it is in use
	growth    = 1.5  // room for a device below its share to grow into, while there is spare rate
	fitMargin = 1.25 // the same, when the rate is all in use
	decay     = 0.9  // the most a device's share falls in one step (bursty flows)
	minStep   = 0.05 // smaller changes of a share are not worth a class change
	minShare  = 0.1
	// minShareRate: a share never goes below this rate (below it, balancing
	// is not worth its HTB delay): a region of 1 Mbps or less is not
	// balanced at all.
	minShareRate = 1 * Mbps
)

// allocate divides a region's rate among the bulk leaves of its devices.
// cur are the current shares (fractions of the rate), sent what each leaf
// sent in the last interval (fraction of the rate), floor the least
// share. A device that sent (almost) its ceiling is held by it (busy) and
// may want more. Pure.
//
//   - Rate to spare: the busy devices split what the others do not use;
//     the others get what they use plus room to grow, at least the spare
//     rate (an idle region goes back to full shares, so a new flow on any
//     device starts at the whole rate).
//   - The rate all in use and some device busy: max-min fair shares, the
//     busy devices wanting without bound and the others what they send;
//     one that sends more than the fair level is cut to it (it may be held
//     by the bucket rather than by its ceiling). The others keep a margin.
//   - The rate all in use and none busy: the bucket holds them all (the
//     policer case); each gets the part it sends, which makes it busy
//     next time.
//
// A share above what its device uses falls by decay a step at most, so a
// flow that sends in bursts keeps room for them. (Whether a leaf holds a
// backlog says little: one GSO packet of a light flow is 64 KB.)
func allocate(cur, sent []float64, floor float64) []float64 {
	n := len(cur)
	next := make([]float64, n)
	total := 0.0
	for _, x := range sent {
		total += x
	}
	full := total >= saturated
	busy := make([]bool, n)
	nbusy, used := 0, 0.0
	for i := range cur {
		busy[i] = sent[i] >= busyUse*cur[i]
		if busy[i] {
			nbusy++
		} else {
			used += sent[i]
		}
	}
	level := fairLevel(sent, busy)
	for i := range cur {
		switch {
		case full && nbusy == 0:
			next[i] = sent[i] / total
		case !full && busy[i]:
			next[i] = (1 - used) / float64(nbusy)
		case !full:
			next[i] = max(sent[i]*growth+floor, sent[i]+1-total, cur[i]*decay)
		case busy[i] || sent[i] > level:
			next[i] = level
		default:
			next[i] = min(max(sent[i]*fitMargin, cur[i]*decay), level)
		}
		next[i] = min(max(next[i], floor), 1)
	}
	return next
}

// fairLevel is the max-min fair share of the rate (1) when the busy
// devices want without bound and the others what they sent.
func fairLevel(sent []float64, busy []bool) float64 {
	var demands []float64
	for i, x := range sent {
		if !busy[i] {
			demands = append(demands, x)
		}
	}
	sort.Float64s(demands)
	left, k := 1.0, len(sent)
	for _, d := range demands {
		if d*float64(k) > left {
			break
		}
		left -= d
		k--
	}
	if k == 0 {
		return 1
	}
	return left / float64(k)
}
