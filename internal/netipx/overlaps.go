package netipx

import (
	"cmp"
	"net/netip"
	"slices"
)

// FirstOverlaps returns, for each prefix of list, the index of the first
// prefix ahead of it in list that overlaps it (covers it, equals it or is
// one of its more-specifics), or -1 when none does.
//
// It sorts once and sweeps once, so a list of any length costs
// O(n log n): in ComparePrefix order, the prefixes covering one are the
// open ancestors on a stack, and those it covers follow it contiguously
// (its subtree), whose least index is known when the sweep leaves it.
func FirstOverlaps(list []netip.Prefix) []int {
	n := len(list)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(ComparePrefix(list[a].Masked(), list[b].Masked()), cmp.Compare(a, b))
	})
	// least[i] is the least index of a prefix overlapping list[i] other
	// than itself (n when none).
	least := make([]int, n)
	type open struct {
		i        int
		ancestry int // least index of this prefix and those covering it
		subtree  int // least index among the prefixes it covers, so far
	}
	var stack []open
	leave := func() {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		least[top.i] = min(least[top.i], top.subtree)
		if len(stack) > 0 {
			parent := &stack[len(stack)-1]
			parent.subtree = min(parent.subtree, top.i, top.subtree)
		}
	}
	for _, i := range order {
		p := list[i].Masked()
		for len(stack) > 0 && !Covers(list[stack[len(stack)-1].i].Masked(), p) {
			leave()
		}
		o := open{i: i, ancestry: i, subtree: n}
		least[i] = n
		if len(stack) > 0 {
			least[i] = stack[len(stack)-1].ancestry
			o.ancestry = min(i, least[i])
		}
		stack = append(stack, o)
	}
	for len(stack) > 0 {
		leave()
	}
	out := make([]int, n)
	for i, j := range least {
		out[i] = -1
		if j < i {
			out[i] = j
		}
	}
	return out
}
