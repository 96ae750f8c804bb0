// Package desired computes what one gateway should have: pure functions
// from the config ([config.Config], and the gateway's part of it,
// [config.Desired]) and what the gateway knows at the moment (a [View]:
// the routes BGP learned, the twins' LAN addresses, its own addresses) to
// the value each subsystem applies: the tunnel's ([config.TunnelState],
// which package dataplane names Desired), the BGP speaker's
// ([config.SpeakerState], routing's Desired) and the shaper's ([Shaping]).
//
// Every decision about where traffic goes is made here, once: which
// gateway is the home of each prefix (homes.go), which local prefixes a
// gateway hands to a twin, which prefixes the shaper charges to which
// region, what a gateway announces and may learn. The agent feeds the
// functions and hands their values to the subsystems, which carry them
// out. Nothing here touches the
// kernel or the network, so the tests need no root.
//
// The package imports only config of this module. The subsystems' input
// types are declared in config (values.go), the one package both sides
// import, so the values computed here are the very values applied.
package desired
