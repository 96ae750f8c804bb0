package agent

import (
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/shaping"
)

// The desired package's tunnel and routing values are the dataplane's and
// the speaker's own types (declared in config). The shaper's rates are
// its own unit, so its value is converted here.

// toShaping is s as the shaper's desired state.
func toShaping(s desired.Shaping) shaping.Desired {
	out := shaping.Desired{Regions: make(map[string]shaping.Rate, len(s.Regions)), Prefixes: s.Prefixes, ControlAddrs: s.ControlAddrs}
	for region, rate := range s.Regions {
		out.Regions[region] = shaping.Rate(rate)
	}
	return out
}
