package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const (
	key1 = "WsxjPdxndRzjSJQRpLifr4dH07bDVcRyp/GekpUTDC4="
	key2 = "LP7VSgVVjavtTu6hWRJ1daWB79WfoG91NmZtAqp8ggg="
	key3 = "BL+uNnIb9rTQrIm4RIKLGePtWmvcaVNh1Z7+m/Lv9zI="
)

// twoGateways is a valid instance head: one gateway in cn-beijing, one in
// us-west-1.
var twoGateways = `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
  - {name: gw-sv, region: us-west-1, endpoint: "192.0.2.2:51820", public_key: "` + key2 + `", private_key_file: k2}
`

// marker stands right ahead of the value an error must point at.
const marker = "«"

// locate strips the marker and returns the text and the marker's 1-based
// line and column.
func locate(t *testing.T, text string) (string, Pos) {
	t.Helper()
	i := strings.Index(text, marker)
	if i < 0 {
		t.Fatalf("case has no %s marker", marker)
	}
	before := text[:i]
	line := strings.Count(before, "\n") + 1
	col := i - strings.LastIndex(before, "\n")
	return before + text[i+len(marker):], Pos{Line: line, Column: col}
}

// locatedCase is a file with one error, its place marked by «.
type locatedCase struct {
	name string
	yaml string
	want string // a part of the message at the marker
}

func TestValidationErrorsAreLocated(t *testing.T) {
	cases := []locatedCase{
		{"unknown top-level key", twoGateways + "«gateway: []\n", `unknown key "gateway" in the config (did you mean gateways?)`},
		{"unknown gateway key", `instance: {name: t}
gateways:
  - name: gw-bj
    region: cn-beijing
    endpoint: 192.0.2.1:51820
    public_key: ` + key1 + `
    private_key_file: k1
    «tunnel_adress: 100.64.0.1
`, `unknown key "tunnel_adress" in a gateway (did you mean tunnel_address?)`},
		{"duplicate key", `instance: {name: t, «name: u}
gateways: []
`, `key "name" appears twice in instance`},
		{"unknown gateway region", `instance: {name: t}
gateways:
  - {name: gw-bj, region: «cn-beijng, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
`, "region cn-beijng is not a known region (did you mean cn-beijing?)"},
		{"unknown network region", twoGateways + `networks:
  - {name: v, type: vpc, region: «us-west-9, cidrs: [10.0.0.0/16]}
`, "network v region us-west-9 is not a known region"},
		{"unknown interconnection region", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: 10Mbps}
interconnections:
  - {regions: [cn-beijing, «us-nowhere-1], package: p, bandwidth: 5Mbps}
`, "interconnection region us-nowhere-1 is not a known region"},
		{"package area unknown", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, «north-americas], bandwidth: 10Mbps}
`, "bandwidth package p area north-americas is not a known area (did you mean north-america?)"},
		{"package areas not a pair", twoGateways + `bandwidth_packages:
  - {name: p, areas: «[mainland-china], bandwidth: 10Mbps}
`, "must list exactly two"},
		{"interconnection areas do not match package", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, europe], bandwidth: 10Mbps}
interconnections:
  - {regions: [cn-beijing, us-west-1], package: «p, bandwidth: 5Mbps}
`, "joins areas mainland-china and north-america, but package p is for mainland-china and europe"},
		{"same-region interconnection", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, mainland-china], bandwidth: 10Mbps}
interconnections:
  - {regions: [cn-beijing, «cn-beijing], package: p, bandwidth: 5Mbps}
`, "joins region cn-beijing to itself"},
		{"pair drawn from two packages", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: 10Mbps}
  - {name: q, areas: [north-america, mainland-china], bandwidth: 10Mbps}
interconnections:
  - {regions: [cn-beijing, us-west-1], package: p, bandwidth: 5Mbps}
  - {regions: «[us-west-1, cn-beijing], package: q, bandwidth: 5Mbps}
`, "already draws from package p (line 9); a pair draws from at most one package"},
		{"pair listed twice", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: 10Mbps}
interconnections:
  - {regions: [cn-beijing, us-west-1], package: p, bandwidth: 5Mbps}
  - {regions: «[cn-beijing, us-west-1], package: p, bandwidth: 5Mbps}
`, "region pair cn-beijing<->us-west-1 is listed twice (first at line 8)"},
		{"package oversubscribed", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
  - {name: gw-sv, region: us-west-1, endpoint: "192.0.2.2:51820", public_key: "` + key2 + `", private_key_file: k2}
  - {name: gw-va, region: us-east-1, endpoint: "192.0.2.3:51820", public_key: "` + key3 + `", private_key_file: k3}
bandwidth_packages:
  - {name: bwp, areas: [mainland-china, north-america], bandwidth: 100Mbps}
interconnections:
  - {regions: [cn-beijing, us-west-1], package: bwp, bandwidth: 60Mbps}
  - {regions: [cn-beijing, us-east-1], package: bwp, bandwidth: «50Mbps}
`, "interconnections drawn from package bwp sum to 110Mbps, above its bandwidth of 100Mbps"},
		{"zero bandwidth", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: «0Mbps}
`, `bandwidth "0Mbps" is zero`},
		{"negative bandwidth", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: «-5Mbps}
`, `bandwidth "-5Mbps" is negative`},
		{"bare-number bandwidth", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: «100}
`, `bandwidth "100" has no unit`},
		{"unparsable bandwidth", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: «fast}
`, `bandwidth "fast" is not a decimal number`},
		{"overlapping cidrs", twoGateways + `networks:
  - {name: a, type: vpc, region: cn-beijing, cidrs: [10.0.0.0/16]}
  - {name: b, type: vpc, region: us-west-1, cidrs: [10.1.0.0/16, «10.0.128.0/17]}
`, "network b cidr 10.0.128.0/17 overlaps network a's cidr 10.0.0.0/16"},
		{"overlapping ipv6 cidrs", twoGateways + `networks:
  - {name: a, type: vpc, region: cn-beijing, cidrs: ["fd00:1::/48"]}
  - {name: b, type: vpc, region: us-west-1, cidrs: [«"fd00::/16"]}
`, "network b cidr fd00::/16 overlaps network a's cidr fd00:1::/48"},
		{"invalid cidr", twoGateways + `networks:
  - {name: a, type: vpc, region: cn-beijing, cidrs: [«10.0.0.0/33]}
`, `"10.0.0.0/33" is not a CIDR`},
		{"cidr host bits", twoGateways + `networks:
  - {name: a, type: vpc, region: cn-beijing, cidrs: [«10.0.0.1/16]}
`, "has host bits set; did you mean 10.0.0.0/16?"},
		{"duplicate gateway name", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
  - {name: «gw-bj, region: us-west-1, endpoint: "192.0.2.2:51820", public_key: "` + key2 + `", private_key_file: k2}
`, "gateway name gw-bj is used twice"},
		{"duplicate network name", twoGateways + `networks:
  - {name: a, type: vpc, region: cn-beijing, cidrs: [10.0.0.0/16]}
  - {name: «a, type: vpc, region: us-west-1, cidrs: [10.1.0.0/16]}
`, "network name a is used twice"},
		{"duplicate package name", twoGateways + `bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: 10Mbps}
  - {name: «p, areas: [mainland-china, europe], bandwidth: 10Mbps}
`, "bandwidth package name p is used twice"},
		{"area redefines a built-in one", `areas:
  - id: «europe
    regions: [{id: eu-lab-1}]
` + twoGateways, "area europe is built in"},
		{"duplicate user area", `areas:
  - {id: lab, regions: [{id: lab-1}]}
  - {id: «lab, regions: [{id: lab-2}]}
` + twoGateways, "area lab is defined twice"},
		{"duplicate region", `areas:
  - {id: lab, regions: [{id: lab-1}, {id: «cn-beijing}]}
` + twoGateways, "region cn-beijing is already in area mainland-china"},
		{"network in a region with no gateway", twoGateways + `networks:
  - {name: a, type: vpc, region: «eu-central-1, cidrs: [10.0.0.0/16]}
`, "network a is in region eu-central-1, which has no gateway"},
		{"vbr gateway in another region", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, gateway: «gw-sv, bgp: {neighbor: 172.30.0.2, peer_asn: 65010}}
`, "gateway gw-sv is in region us-west-1, not the VBR's region cn-beijing"},
		{"vbr gateway unknown", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, gateway: «gw-bk, bgp: {neighbor: 172.30.0.2, peer_asn: 65010}}
`, "gateway gw-bk is not a gateway of this instance (did you mean gw-bj?)"},
		{"vbr gateway missing with two gateways", `instance: {name: t}
gateways:
  - {name: gw-bj-1, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
  - {name: gw-bj-2, region: cn-beijing, endpoint: "192.0.2.2:51820", public_key: "` + key2 + `", private_key_file: k2}
networks:
  - {name: idc, type: vbr, region: «cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010}}
`, "region cn-beijing has 2 gateways; say which holds the BGP session"},
		{"endpoint without port", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: «"192.0.2.1", public_key: "` + key1 + `", private_key_file: k1}
`, "write it as address:port with the port, like 192.0.2.1:51820"},
		{"ipv6 endpoint without brackets", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: «"2001:db8::1:51820", public_key: "` + key1 + `", private_key_file: k1}
`, "is not an endpoint"},
		{"endpoint port zero", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: «"192.0.2.1:0", public_key: "` + key1 + `", private_key_file: k1}
`, "has port 0"},
		{"duplicate endpoint", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
  - {name: gw-sv, region: us-west-1, endpoint: «"192.0.2.1:51820", public_key: "` + key2 + `", private_key_file: k2}
`, "endpoint 192.0.2.1:51820 is already gateway gw-bj's"},
		{"malformed key", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: «"c2hvcnQ=", private_key_file: k1}
`, "public_key is not a WireGuard key: it must be base64 of 32 bytes"},
		{"duplicate public key", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
  - {name: gw-sv, region: us-west-1, endpoint: "192.0.2.2:51820", public_key: «"` + key1 + `", private_key_file: k2}
`, "public_key is already gateway gw-bj's"},
		{"asn zero", "instance: {name: t, asn: «0}\ngateways: []\n", `instance asn "0" must be a whole number from 1 to 4294967295`},
		{"asn too large", "instance: {name: t, asn: «4294967296}\ngateways: []\n", "must be a whole number from 1 to 4294967295"},
		{"asn not a number", "instance: {name: t, asn: «AS64512}\ngateways: []\n", "must be a whole number"},
		{"peer asn malformed", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: «-1}}
`, "peer_asn \"-1\" must be a whole number"},
		{"peer asn is the instance's", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: «64512}}
`, "peer_asn 64512 is the instance's own ASN"},
		{"malformed neighbor", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: «172.30.0.256, peer_asn: 65010}}
`, `neighbor "172.30.0.256" is not an IP address`},
		{"neighbor inside a vpc", twoGateways + `networks:
  - {name: v, type: vpc, region: cn-beijing, cidrs: [172.30.0.0/24]}
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: «172.30.0.2, peer_asn: 65010}}
`, "neighbor 172.30.0.2 lies inside network v's cidr 172.30.0.0/24"},
		{"duplicate tunnel address", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1, tunnel_address: 100.64.0.1}
  - {name: gw-sv, region: us-west-1, endpoint: "192.0.2.2:51820", public_key: "` + key2 + `", private_key_file: k2, tunnel_address: «100.64.0.1}
`, "tunnel_address 100.64.0.1 is already gateway gw-bj's"},
		{"derived tunnel address inside a vpc", `instance: {name: t}
gateways:
  - {name: «gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1}
networks:
  - {name: v, type: vpc, region: cn-beijing, cidrs: [100.64.0.0/10]}
`, "tunnel address 100.110.196.214 lies inside network v's cidr 100.64.0.0/10; set tunnel_address"},
		{"IPv6 tunnel address", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1, tunnel_address: «"fd00::1"}
`, "tunnel_address fd00::1 must be IPv4: it is the gateway's BGP router ID, and its IPv6 tunnel address is derived from it (in fd63:656e::/96)"},
		{"IPv6 tunnel address inside a vpc", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1, tunnel_address: «100.64.0.1}
networks:
  - {name: v, type: vpc, region: cn-beijing, cidrs: ["fd63:656e::/64"]}
`, "IPv6 tunnel address fd63:656e::6440:1 lies inside network v's cidr fd63:656e::/64; keep IPv6 CIDRs outside fd63:656e::/96"},
		{"endpoint inside a vpc", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: «"10.0.0.1:51820", public_key: "` + key1 + `", private_key_file: k1}
networks:
  - {name: v, type: vpc, region: cn-beijing, cidrs: [10.0.0.0/8]}
`, "endpoint 10.0.0.1 lies inside network v's cidr 10.0.0.0/8"},
		{"weight zero", `instance: {name: t}
gateways:
  - {name: gw-bj, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + key1 + `", private_key_file: k1, weight: «0}
`, `weight "0" must be a whole number from 1 to 1000000`},
		{"max prefixes zero", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010, max_prefixes: «0}}
`, "max_prefixes \"0\" must be a whole number from 1"},
		{"max prefixes restart not a duration", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010, max_prefixes_restart: «5}}
`, `max_prefixes_restart "5" must be a duration of 0s or more, like 5m or 90s`},
		{"ttl security not a boolean", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010, ttl_security: «1}}
`, `ttl_security "1" must be true or false`},
		{"bfd not a boolean", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010, bfd: «yes}}
`, `bfd "yes" must be true or false`},
		{"vpc with bgp", twoGateways + `networks:
  - {name: v, type: vpc, region: cn-beijing, cidrs: [10.0.0.0/16], bgp: «{neighbor: 172.30.0.2}}
`, "network v is a vpc and has no BGP session"},
		{"vbr with cidrs", twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, cidrs: «[10.0.0.0/16], bgp: {neighbor: 172.30.0.2, peer_asn: 65010}}
`, "its prefixes are learned over BGP, so it has no cidrs"},
		{"unknown network type", twoGateways + `networks:
  - {name: v, type: «vpn, region: cn-beijing, cidrs: [10.0.0.0/16]}
`, `network v type "vpn" is unknown; it is vpc or vbr`},
		{"missing key", twoGateways + `networks:
  - «{name: v, type: vpc, region: cn-beijing}
`, "network v is missing cidrs"},
		{"mapping expected", "instance: «[t]\ngateways: []\n", "instance must be a mapping of keys to values, not a list"},
		{"bad name", "instance: {name: «Cen_Demo}\ngateways: []\n", `instance name "Cen_Demo" is not a valid name`},
		// The item less indented than its list's first is the error, not
		// the list it leaves.
		{"malformed yaml", "instance: {name: t}\ngateways:\n  - name: a\n «- name: b\n", "not valid YAML"},
		{"two documents", "instance: {name: t}\ngateways: []\n«---\ninstance: {name: u}\n", "more than one YAML document"},
		{"missing instance", "«gateways: []\n", "instance is missing"},
	}
	cases = append(cases, yamlSyntaxCases(t)...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text, at := locate(t, tc.yaml)
			_, err := Parse("cen.yaml", []byte(text))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Parse returned %v, want an ErrorList", err)
			}
			if len(list) != 1 {
				t.Errorf("got %d errors, want 1:\n%v", len(list), list)
			}
			for _, e := range list {
				if strings.Contains(e.Msg, tc.want) {
					if e.Pos != at {
						t.Errorf("error %q at %d:%d, want %d:%d", e.Msg, e.Pos.Line, e.Pos.Column, at.Line, at.Column)
					}
					if got := e.Error(); !strings.HasPrefix(got, fmt.Sprintf("cen.yaml:%d:", at.Line)) {
						t.Errorf("error text %q does not start with FILE:LINE:COL", got)
					}
					return
				}
			}
			t.Fatalf("no error contains %q; got:\n%v", tc.want, list)
		})
	}
}

func TestEveryErrorOfAFileIsReported(t *testing.T) {
	cfg, err := Load("testdata/five-mistakes.yaml")
	if cfg != nil {
		t.Fatal("a bad file returned a config")
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want ErrorList, got %v", err)
	}
	want := []string{
		"testdata/five-mistakes.yaml:7:13: gateway gw-beijing-1 region cn-beijng is not a known region",
		"testdata/five-mistakes.yaml:8:15: gateway gw-beijing-1 endpoint",
		"testdata/five-mistakes.yaml:25:13: network vpc-sv-2 cidr 10.20.128.0/17 overlaps network vpc-sv's",
		"testdata/five-mistakes.yaml:30:16: bandwidth package bwp-china-na bandwidth",
		"testdata/five-mistakes.yaml:34:14: interconnection cn-shanghai<->us-west-1 draws from package bwp-china-eu, which is not defined",
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), list)
	}
	for i, w := range want {
		if !strings.HasPrefix(list[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, list[i].Error(), w)
		}
	}
}

func TestAreaPairMatchesInEitherOrder(t *testing.T) {
	text := twoGateways + `bandwidth_packages:
  - {name: p, areas: [north-america, mainland-china], bandwidth: 10Mbps}
interconnections:
  - {regions: [us-west-1, cn-beijing], package: p, bandwidth: 10Mbps}
`
	cfg, err := Parse("cen.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Pair("cn-beijing", "us-west-1"); got.Bandwidth != 10_000_000 || got.Package != "p" {
		t.Errorf("pair = %+v", got)
	}
}

func TestUserDefinedAreasAndRegions(t *testing.T) {
	text := `instance: {name: lab}
areas:
  - id: lab
    regions:
      - {id: lab-east, name: Lab (East)}
      - {id: lab-west}
gateways:
  - {name: e, region: lab-east, endpoint: "10.255.0.1:51820", public_key: "` + key1 + `", private_key_file: k1}
  - {name: w, region: lab-west, endpoint: "10.255.0.2:51820", public_key: "` + key2 + `", private_key_file: k2}
bandwidth_packages:
  - {name: p, areas: [lab, lab], bandwidth: 1Gbps}
interconnections:
  - {regions: [lab-east, lab-west], package: p, bandwidth: 1Gbps}
`
	cfg, err := Parse("lab.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := cfg.Region("lab-west")
	if !ok || r.Area != "lab" || r.Name != "lab-west" {
		t.Errorf("lab-west = %+v, %v", r, ok)
	}
	if r, _ := cfg.Region("lab-east"); r.Name != "Lab (East)" {
		t.Errorf("lab-east name = %q", r.Name)
	}
}

func TestRelativePathsResolveAgainstTheFile(t *testing.T) {
	text := twoGateways + `networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010, password_file: keys/idc.md5}}
`
	cfg, err := Parse("/etc/opencen/cen.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Gateways[0].PrivateKeyFile; got != "/etc/opencen/k1" {
		t.Errorf("private_key_file = %q", got)
	}
	if got := cfg.Networks[0].BGP.PasswordFile; got != "/etc/opencen/keys/idc.md5" {
		t.Errorf("password_file = %q", got)
	}
	if got := cfg.Networks[0].Gateway; got != "gw-bj" {
		t.Errorf("VBR gateway defaults to its region's only gateway, got %q", got)
	}
}

// TestVBRSessionLimitsAndGTSM: max_prefixes and its restart have their
// defaults when left out; ttl_security and both limits are read when set.
func TestVBRSessionLimitsAndGTSM(t *testing.T) {
	for _, c := range []struct {
		bgp     string
		max     uint32
		restart time.Duration
		gtsm    bool
	}{
		{"{neighbor: 172.30.0.2, peer_asn: 65010}", 10_000, 5 * time.Minute, false},
		{"{neighbor: 172.30.0.2, peer_asn: 65010, max_prefixes: 200, max_prefixes_restart: 0s, ttl_security: true}", 200, 0, true},
		{"{neighbor: 172.30.0.2, peer_asn: 65010, max_prefixes_restart: 90s}", 10_000, 90 * time.Second, false},
	} {
		cfg, err := Parse("t.yaml", []byte(twoGateways+"networks:\n  - {name: idc, type: vbr, region: cn-beijing, bgp: "+c.bgp+"}\n"))
		if err != nil {
			t.Fatalf("%s: %v", c.bgp, err)
		}
		b := cfg.Networks[0].BGP
		if b.MaxPrefixes != c.max || b.MaxPrefixesRestart != c.restart || b.TTLSecurity != c.gtsm {
			t.Errorf("%s: max_prefixes %d, restart %v, ttl_security %v; want %d, %v, %v", c.bgp, b.MaxPrefixes, b.MaxPrefixesRestart, b.TTLSecurity, c.max, c.restart, c.gtsm)
		}
	}
}

func TestExamplesValidate(t *testing.T) {
	for _, f := range []string{"small", "realistic", "lab"} {
		if _, err := Load("../examples/" + f + ".yaml"); err != nil {
			t.Errorf("examples/%s.yaml: %v", f, err)
		}
	}
}
