// Package test holds opencen's end-to-end tests: real cend and cenctl
// processes, and (as the agent lands) gateways in network namespaces of
// their own. Each test builds the commands it runs from this checkout.
package test
