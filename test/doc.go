// Package test holds opencen's end-to-end tests and benchmarks: real cend,
// cenctl and BIRD processes, with gateways in network namespaces of their
// own that the lab package builds. Each test builds the commands it runs
// from this checkout. Beside it, benchreport runs the benchmarks of make
// bench and reports them.
package test
