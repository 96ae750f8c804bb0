package config

import (
	"fmt"
	"math"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

func (d decoder) instance(n *yaml.Node) Instance {
	inst := Instance{ASN: DefaultASN}
	m, ok := d.mapping(n, "instance", "name", "asn")
	if !ok {
		return inst
	}
	inst.pos = positions(m, n)
	if v, ok := d.required(m, n, "instance", "name", ", like name: cen-demo"); ok {
		inst.Name = d.name(v, "instance name")
	}
	if v, ok := m["asn"]; ok {
		inst.ASN = d.asn(v, "instance asn")
	}
	return inst
}

// identified opens an item that has an id key: it stores the id and its
// position and returns the keys. ok is false when n is no mapping.
func (d decoder) identified(n *yaml.Node, article, what, example string, id *string, pos *Pos, keys ...string) (map[string]*yaml.Node, bool) {
	m, ok := d.mapping(n, article, append([]string{"id"}, keys...)...)
	if !ok {
		return nil, false
	}
	if v, ok := d.required(m, n, article, "id", ", like id: "+example); ok {
		*id = d.name(v, what)
		*pos = nodePos(v)
	}
	return m, true
}

func (d decoder) area(n *yaml.Node) Area {
	var a Area
	m, ok := d.identified(n, "an area", "area id", "lab", &a.ID, &a.pos, "regions")
	if !ok {
		return a
	}
	if _, ok := d.required(m, n, "area "+a.ID, "regions", "; list at least one region"); ok {
		items := d.list(m["regions"], "regions of area "+a.ID)
		if len(items) == 0 {
			d.p.add(nodePos(m["regions"]), "area %s has no regions; list at least one", a.ID)
		}
		for _, item := range items {
			a.Regions = append(a.Regions, d.region(item, a.ID))
		}
	}
	return a
}

func (d decoder) region(n *yaml.Node, area string) Region {
	r := Region{Area: area}
	m, ok := d.identified(n, "a region", "region id", "lab-east", &r.ID, &r.pos, "name")
	if !ok {
		return r
	}
	r.Name = r.ID
	if v, ok := m["name"]; ok {
		r.Name = d.text(v, "region name")
	}
	return r
}

// named opens an item of the given kind that has a name key: it stores
// the name and the keys' positions and returns the keys and how errors
// call the item ("gateway gw-beijing-1"). ok is false when n is no mapping.
func (d decoder) named(n *yaml.Node, kind, example string, name *string, pos *fields, keys ...string) (m map[string]*yaml.Node, what string, ok bool) {
	article := "a " + kind
	m, ok = d.mapping(n, article, append([]string{"name"}, keys...)...)
	if !ok {
		return nil, "", false
	}
	*pos = positions(m, n)
	if v, ok := d.required(m, n, article, "name", ", like name: "+example); ok {
		*name = d.name(v, kind+" name")
	}
	return m, kind + " " + *name, true
}

func (d decoder) gateway(n *yaml.Node) Gateway {
	g := Gateway{Weight: 1}
	m, what, ok := d.named(n, "gateway", "gw-beijing-1", &g.Name, &g.pos, "region", "endpoint", "public_key", "private_key_file", "tunnel_address", "weight")
	if !ok {
		return g
	}
	if v, ok := d.required(m, n, what, "region", ", like region: cn-beijing"); ok {
		g.Region = d.name(v, what+" region")
	}
	if v, ok := d.required(m, n, what, "endpoint", ", the underlay address:port peers dial, like 192.0.2.11:51820"); ok {
		g.Endpoint = d.endpoint(v, what+" endpoint")
	}
	if v, ok := d.required(m, n, what, "public_key", ", the gateway's base64 WireGuard public key"); ok {
		if s, ok := d.scalar(v, what+" public_key"); ok {
			k, err := ParseKey(s)
			if err != nil {
				d.p.add(nodePos(v), "%s public_key is not a WireGuard key: it must be base64 of 32 bytes, as `wg pubkey` prints", what)
			}
			g.PublicKey = k
		}
	}
	if v, ok := d.required(m, n, what, "private_key_file", ", the file holding its WireGuard private key"); ok {
		g.PrivateKeyFile = d.text(v, what+" private_key_file")
	}
	if v, ok := m["tunnel_address"]; ok {
		g.TunnelAddress = d.addr(v, what+" tunnel_address")
		if g.TunnelAddress.Is6() {
			d.p.add(nodePos(v), "%s tunnel_address %s must be IPv4: it is the gateway's BGP router ID, and its IPv6 tunnel address is derived from it (in %s)", what, g.TunnelAddress, TunnelPrefix6)
			g.TunnelAddress = netip.Addr{}
		}
	}
	if v, ok := m["weight"]; ok {
		w, _ := d.unsigned(v, what+" weight", 1, 1_000_000)
		g.Weight = uint32(w)
	}
	return g
}

func (d decoder) endpoint(n *yaml.Node, what string) netip.AddrPort {
	s, ok := d.scalar(n, what)
	if !ok {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		hint := "address:port, like 192.0.2.11:51820 or [2001:db8::11]:51820"
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			hint = "address:port with the port, like " + s + ":51820"
			if strings.Contains(s, ":") {
				hint = "[address]:port with the port, like [" + s + "]:51820"
			}
		}
		d.p.add(nodePos(n), "%s %q is not an endpoint; write it as %s", what, s, hint)
		return netip.AddrPort{}
	}
	switch a := ap.Addr(); {
	case ap.Port() == 0:
		d.p.add(nodePos(n), "%s %q has port 0; use the UDP port WireGuard listens on, like 51820", what, s)
	case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast():
		d.p.add(nodePos(n), "%s %q must be a unicast address peers can dial", what, s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (d decoder) network(n *yaml.Node) Network {
	var nw Network
	m, what, ok := d.named(n, "network", "vpc-beijing", &nw.Name, &nw.pos, "type", "region", "cidrs", "gateway", "bgp")
	if !ok {
		return nw
	}
	if v, ok := d.required(m, n, what, "type", ": vpc or vbr"); ok {
		if s, ok := d.scalar(v, what+" type"); ok {
			nw.Type = NetworkType(s)
			if nw.Type != VPC && nw.Type != VBR {
				d.p.add(nodePos(v), "%s type %q is unknown; it is vpc or vbr", what, s)
			}
		}
	}
	if v, ok := d.required(m, n, what, "region", ", like region: cn-beijing"); ok {
		nw.Region = d.name(v, what+" region")
	}
	if v, ok := m["gateway"]; ok {
		nw.Gateway = d.name(v, what+" gateway")
	}
	switch nw.Type {
	case VPC:
		if v, ok := d.required(m, n, what, "cidrs", ", like cidrs: [10.10.0.0/16]"); ok {
			nw.CIDRs, nw.cidrPos = d.prefixes(v, what+" cidrs")
			if len(d.list(v, "")) == 0 {
				d.p.add(nodePos(v), "%s has no cidrs; a VPC needs at least one", what)
			}
		}
		if v, ok := m["bgp"]; ok {
			d.p.add(nodePos(v), "%s is a vpc and has no BGP session; bgp belongs to a vbr", what)
		}
		if v, ok := m["gateway"]; ok {
			d.p.add(nodePos(v), "%s is a vpc; every gateway of its region serves it, so gateway belongs to a vbr", what)
		}
	case VBR:
		if v, ok := m["cidrs"]; ok {
			d.p.add(nodePos(v), "%s is a vbr: its prefixes are learned over BGP, so it has no cidrs; limit them with bgp.accept", what)
		}
		if v, ok := d.required(m, n, what, "bgp", ", the session with its on-premises router (neighbor, peer_asn)"); ok {
			nw.BGP = d.vbrSession(v, what)
		}
	}
	return nw
}

func (d decoder) vbrSession(n *yaml.Node, network string) *VBRSession {
	s := &VBRSession{AcceptAny: true, MaxPrefixes: DefaultMaxPrefixes, MaxPrefixesRestart: DefaultMaxPrefixesRestart}
	m, ok := d.mapping(n, network+" bgp", "neighbor", "peer_asn", "accept", "max_prefixes", "max_prefixes_restart",
		"password_file", "ttl_security", "bfd")
	if !ok {
		return s
	}
	s.pos = positions(m, n)
	what := network + " bgp"
	if v, ok := d.required(m, n, what, "neighbor", ", the on-premises router's address"); ok {
		s.Neighbor = d.addr(v, what+" neighbor")
	}
	if v, ok := d.required(m, n, what, "peer_asn", ", the on-premises router's ASN"); ok {
		s.PeerASN = d.asn(v, what+" peer_asn")
	}
	if v, ok := m["accept"]; ok {
		s.AcceptAny = false
		s.Accept, s.acceptPos = d.prefixes(v, what+" accept")
	}
	if v, ok := m["max_prefixes"]; ok {
		mp, _ := d.unsigned(v, what+" max_prefixes", 1, math.MaxUint32)
		s.MaxPrefixes = uint32(mp)
	}
	if v, ok := m["max_prefixes_restart"]; ok {
		s.MaxPrefixesRestart = d.duration(v, what+" max_prefixes_restart", 0)
	}
	if v, ok := m["ttl_security"]; ok {
		s.TTLSecurity = d.boolean(v, what+" ttl_security")
	}
	if v, ok := m["password_file"]; ok {
		s.PasswordFile = d.text(v, what+" password_file")
	}
	if v, ok := m["bfd"]; ok {
		s.BFD = d.boolean(v, what+" bfd")
	}
	return s
}

func (d decoder) pair(n *yaml.Node, what, example string) ([2]string, [2]Pos, bool) {
	var out [2]string
	var at [2]Pos
	items := d.list(n, what)
	if len(items) != 2 {
		if n.Kind == yaml.SequenceNode {
			d.p.add(nodePos(n), "%s must list exactly two, like %s, not %d", what, example, len(items))
		}
		return out, at, false
	}
	ok := true
	for i, item := range items {
		out[i] = d.name(item, what+" entry")
		at[i] = nodePos(item)
		ok = ok && out[i] != ""
	}
	return out, at, ok
}

func (d decoder) pkg(n *yaml.Node) Package {
	var p Package
	m, what, ok := d.named(n, "bandwidth package", "bwp-china-na", &p.Name, &p.pos, "areas", "bandwidth")
	if !ok {
		return p
	}
	if v, ok := d.required(m, n, what, "areas", ", the two areas it connects, like areas: [mainland-china, north-america]"); ok {
		var at [2]Pos
		p.Areas, at, _ = d.pair(v, what+" areas", "[mainland-china, north-america]")
		p.pos[areaKey(0)], p.pos[areaKey(1)] = at[0], at[1]
	}
	if v, ok := d.required(m, n, what, "bandwidth", ", like bandwidth: 100Mbps"); ok {
		p.Bandwidth = d.bandwidth(v, what+" bandwidth")
	}
	return p
}

func (d decoder) interconnection(n *yaml.Node) Interconnection {
	var ic Interconnection
	m, ok := d.mapping(n, "an interconnection", "regions", "package", "bandwidth")
	if !ok {
		return ic
	}
	ic.pos = positions(m, n)
	what := "an interconnection"
	if v, ok := d.required(m, n, what, "regions", ", the two regions it joins, like regions: [cn-beijing, us-west-1]"); ok {
		var at [2]Pos
		ic.Regions, at, _ = d.pair(v, "interconnection regions", "[cn-beijing, us-west-1]")
		ic.pos[regionKey(0)], ic.pos[regionKey(1)] = at[0], at[1]
		what = fmt.Sprintf("interconnection %s<->%s", ic.Regions[0], ic.Regions[1])
	}
	if v, ok := d.required(m, n, what, "package", ", the bandwidth package it draws from"); ok {
		ic.Package = d.name(v, what+" package")
	}
	if v, ok := d.required(m, n, what, "bandwidth", ", like bandwidth: 60Mbps"); ok {
		ic.Bandwidth = d.bandwidth(v, what+" bandwidth")
	}
	return ic
}
