// Package iperf3 reads the JSON iperf3 prints with -J, for the lab's demo
// and the tests.
package iperf3

// Result is the part of `iperf3 -c ... -J`'s output that is read.
type Result struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	// Error is iperf3's own complaint ("the server is busy running a
	// test"); with -J it may exit 0 and say so here only.
	Error string `json:"error"`
}
