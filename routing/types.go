package routing

import (
	"slices"

	"github.com/opencen/opencen/config"
)

// NetworkKind says what sort of network a prefix belongs to.
type NetworkKind = config.NetworkKind

const (
	KindVPC = config.KindVPC
	KindVBR = config.KindVBR
)

// Desired is everything one gateway's BGP speaker should do: plain data
// the desired package computes from the config; Speaker.Set applies it.
type Desired = config.SpeakerState

// GatewayPeer is another gateway of the instance.
type GatewayPeer = config.GatewayPeer

// Entitlement is one network a gateway peer may announce routes for.
type Entitlement = config.NetworkEntitlement

// Origin is a VPC CIDR this gateway announces.
type Origin = config.NamedPrefix

// NamedPrefix is a prefix with the network and region it belongs to.
type NamedPrefix = config.NamedPrefix

// VBRSession is an eBGP session with an on-premises router; it holds a
// password and prints without it.
type VBRSession = config.VBRPeer

// clone deep-copies d so the caller may reuse its slices.
func cloneDesired(d Desired) Desired {
	c := d
	c.Gateways = make([]GatewayPeer, len(d.Gateways))
	for i, g := range d.Gateways {
		g.Entitled = slices.Clone(g.Entitled)
		for j := range g.Entitled {
			g.Entitled[j].Prefixes = slices.Clone(g.Entitled[j].Prefixes)
		}
		c.Gateways[i] = g
	}
	c.Originate = slices.Clone(d.Originate)
	c.VBRs = make([]VBRSession, len(d.VBRs))
	for i, v := range d.VBRs {
		v.Accept = slices.Clone(v.Accept)
		c.VBRs[i] = v
	}
	c.InstanceCIDRs = slices.Clone(d.InstanceCIDRs)
	c.ProtectedPrefixes = slices.Clone(d.ProtectedPrefixes)
	c.RouterAddresses = slices.Clone(d.RouterAddresses)
	c.Connected = slices.Clone(d.Connected)
	c.HandoffAddresses = slices.Clone(d.HandoffAddresses)
	return c
}
