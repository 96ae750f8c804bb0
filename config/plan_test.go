package config

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

func TestPlanOfAChange(t *testing.T) {
	old := mustLoad(t, "../examples/realistic.yaml")
	data, err := os.ReadFile("../examples/realistic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	// Move Shanghai's endpoint address, add a CIDR to its VPC, raise one
	// interconnection and lower another.
	text = strings.Replace(text, "192.0.2.31:51820", "192.0.2.131:51820", 1)
	text = strings.Replace(text, "    cidrs: [10.11.0.0/16]", "    cidrs: [10.11.0.0/16, 10.12.0.0/16]", 1)
	text = strings.Replace(text, "    bandwidth: 60Mbps", "    bandwidth: 90Mbps", 1)
	text = strings.Replace(text, "    bandwidth: 40Mbps", "    bandwidth: 10Mbps", 1)
	new := mustParse(t, text)

	plan := MakePlan(old, new)
	byName := map[string]GatewayPlan{}
	for _, g := range plan.Gateways {
		byName[g.Gateway] = g
	}
	sh := byName["gw-shanghai-1"]
	// Its endpoint address is what peers dial, not a setting of its own:
	// its listen port is unchanged.
	if sh.Action != PlanChange || len(sh.Settings) != 0 {
		t.Errorf("gw-shanghai-1 = %+v", sh)
	}
	if len(sh.OriginateAdded) != 1 || sh.OriginateAdded[0] != netip.MustParsePrefix("10.12.0.0/16") {
		t.Errorf("gw-shanghai-1 originate added = %v", sh.OriginateAdded)
	}
	bj := byName["gw-beijing-1"]
	if bj.Action != PlanChange {
		t.Fatalf("gw-beijing-1 action = %s", bj.Action)
	}
	var endpoint, entitlement bool
	for _, pc := range bj.PeersChanged {
		if pc.Peer != "gw-shanghai-1" {
			t.Errorf("unexpected peer change %+v", pc)
		}
		for _, c := range pc.Changes {
			endpoint = endpoint || c.Field == "endpoint" && c.Old == "192.0.2.31:51820" && c.New == "192.0.2.131:51820"
			entitlement = entitlement || c.Field == "entitlement"
		}
	}
	if !endpoint || !entitlement {
		t.Errorf("gw-beijing-1 peer changes = %+v, want endpoint and entitlement of gw-shanghai-1", bj.PeersChanged)
	}
	// 2/3 of 60 -> 2/3 of 90 toward us-west-1.
	if len(bj.Rates) != 1 || bj.Rates[0] != (RateChange{"us-west-1", 40_000_000, 60_000_000}) {
		t.Errorf("gw-beijing-1 rates = %+v", bj.Rates)
	}
	// Frankfurt only sees its Shanghai peer change; its rates stand.
	if fra := byName["gw-frankfurt-1"]; fra.Action != PlanChange || len(fra.PeersChanged) != 1 || len(fra.Rates) != 0 || len(fra.OriginateAdded) != 0 {
		t.Errorf("gw-frankfurt-1 = %+v", fra)
	}
	if len(plan.Bandwidth) != 2 {
		t.Errorf("bandwidth changes = %+v, want two pairs", plan.Bandwidth)
	}
}

func TestPlanAddAndRemoveGateways(t *testing.T) {
	old := mustParse(t, gatewaysYAML("gw-a", "gw-b"))
	new := mustParse(t, gatewaysYAML("gw-b", "gw-c"))
	plan := MakePlan(old, new)
	got := map[string]string{}
	for _, g := range plan.Gateways {
		got[g.Gateway] = g.Action
	}
	want := map[string]string{"gw-a": PlanRemove, "gw-b": PlanChange, "gw-c": PlanAdd}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
	for _, g := range plan.Gateways {
		if g.Gateway == "gw-b" && (len(g.PeersAdded) != 1 || g.PeersAdded[0] != "gw-c" || len(g.PeersRemoved) != 1 || g.PeersRemoved[0] != "gw-a") {
			t.Errorf("gw-b peers: %+v", g)
		}
	}
	if MakePlan(new, new).Changed() {
		t.Error("a config planned against itself changes something")
	}
}
