package config

import (
	"encoding/base64"
	"net/netip"
	"time"
)

// DefaultASN is the instance ASN VBR routers peer with when the config
// names none.
const DefaultASN uint32 = 64512

// Config is one CEN instance as its file describes it, decoded and
// validated. Every gateway reads the same Config and is told which gateway
// it is.
type Config struct {
	// File is the path the config is read from, as given; Dir is the
	// folder relative paths in it are resolved against.
	File string
	Dir  string
	// Digest names the file's bytes (SHA-256, first 16 hex digits): the
	// gateways of an instance read the same file, so gateways whose
	// digests differ run different configs.
	Digest string

	Instance         Instance
	Areas            []Area // user-defined areas only; see BuiltinAreas
	Gateways         []Gateway
	Networks         []Network
	Packages         []Package
	Interconnections []Interconnection

	regions map[string]Region // built-in and user-defined, by id
	areas   map[string]Area
}

// Instance names the CEN instance and its ASN.
type Instance struct {
	Name string
	ASN  uint32
	pos  fields
}

// Gateway is one host running cend.
type Gateway struct {
	Name           string
	Region         string
	Endpoint       netip.AddrPort
	PublicKey      Key
	PrivateKeyFile string // resolved against Config.Dir
	// TunnelAddress is the gateway's overlay address: the configured one,
	// or one derived from the gateway's name alone (see DeriveTunnelAddress).
	TunnelAddress        netip.Addr
	TunnelAddressDerived bool
	Weight               uint32 // share of the region's budgets, default 1
	pos                  fields
}

// NetworkType is vpc or vbr.
type NetworkType string

const (
	VPC NetworkType = "vpc"
	VBR NetworkType = "vbr"
)

// Network is a VPC (static CIDRs) or a VBR (prefixes learned over eBGP from
// an on-premises router).
type Network struct {
	Name   string
	Type   NetworkType
	Region string
	CIDRs  []netip.Prefix // VPC only
	// Gateway holds a VBR's BGP session: the configured one, or the only
	// gateway of its region.
	Gateway string
	BGP     *VBRSession // VBR only
	pos     fields
	cidrPos []Pos
}

// The limits of a VBR session whose config leaves them out: a data
// centre's full table is far more than any VPC needs, and a router that
// sends one by mistake must not cost every gateway its memory.
const (
	DefaultMaxPrefixes        = 10_000
	DefaultMaxPrefixesRestart = 5 * time.Minute
)

// VBRSession is the eBGP session of a VBR with its on-premises router.
type VBRSession struct {
	Neighbor netip.Addr
	PeerASN  uint32
	// Accept lists what the router may announce, each entry with its
	// more-specifics. AcceptAny is true when the key is omitted.
	Accept    []netip.Prefix
	AcceptAny bool
	// MaxPrefixes shuts the session down past this many prefixes
	// (DefaultMaxPrefixes when the key is omitted); MaxPrefixesRestart
	// brings a tripped session back after that long (0: an operator
	// does, with cenctl peers reset).
	MaxPrefixes        uint32
	MaxPrefixesRestart time.Duration
	PasswordFile       string // resolved against Config.Dir; empty: no TCP-MD5
	BFD                bool
	// TTLSecurity is GTSM (RFC 5082): the router is one hop away, so its
	// packets must arrive with TTL 255.
	TTLSecurity bool
	pos         fields
	acceptPos   []Pos
}

// Package is a bandwidth package bought for a pair of areas.
type Package struct {
	Name      string
	Areas     [2]string
	Bandwidth Bandwidth
	pos       fields
}

// Interconnection gives a region pair bandwidth out of a package.
type Interconnection struct {
	Regions   [2]string
	Package   string
	Bandwidth Bandwidth
	pos       fields
}

// Key is a WireGuard public key.
type Key [32]byte

// String is the key's base64 form, as WireGuard tools print it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParseKey reads a base64 WireGuard key of 32 bytes.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, errBadKey
	}
	copy(k[:], b)
	return k, nil
}

// fields maps a key of a config item to where its value stands; the empty
// key is the item itself.
type fields map[string]Pos

func (f fields) of(key string) Pos {
	if p, ok := f[key]; ok && p.Line > 0 {
		return p
	}
	return f[""]
}

// Region returns a region of the catalogue (built-in or user-defined).
func (c *Config) Region(id string) (Region, bool) {
	r, ok := c.regions[id]
	return r, ok
}

// Gateway returns the gateway of that name.
func (c *Config) Gateway(name string) (*Gateway, bool) {
	for i := range c.Gateways {
		if c.Gateways[i].Name == name {
			return &c.Gateways[i], true
		}
	}
	return nil, false
}

// GatewaysIn returns the gateways of a region, in file order.
func (c *Config) GatewaysIn(region string) []*Gateway {
	var out []*Gateway
	for i := range c.Gateways {
		if c.Gateways[i].Region == region {
			out = append(out, &c.Gateways[i])
		}
	}
	return out
}
