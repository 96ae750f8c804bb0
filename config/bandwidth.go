package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bandwidth is a rate in bits per second.
type Bandwidth uint64

// DefaultBandwidth is what a cross-region pair with no interconnection gets
// (SPEC section 2, rule 4): enough for a ping, nothing more.
const DefaultBandwidth Bandwidth = 1000

var bandwidthUnits = []struct {
	suffix string
	scale  uint64
}{
	// Longest suffixes first so "Mbps" is not read as "bps".
	{"Kbps", 1e3}, {"Mbps", 1e6}, {"Gbps", 1e9}, {"bps", 1},
}

// ParseBandwidth reads a decimal rate with a unit: bps, Kbps, Mbps or Gbps
// ("1.5Gbps", "60 Mbps"). Bare numbers, zero, negative values and rates
// that are not a whole number of bits per second are errors.
func ParseBandwidth(s string) (Bandwidth, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty bandwidth; write a number with a unit, like 100Mbps")
	}
	// Split into the number and the unit: the unit is the trailing letters.
	cut := len(s)
	for cut > 0 && isLetter(s[cut-1]) {
		cut--
	}
	number, unit := strings.TrimSpace(s[:cut]), s[cut:]
	var scale uint64
	for _, u := range bandwidthUnits {
		if unit == u.suffix {
			scale = u.scale
		}
	}
	if scale == 0 {
		switch {
		case unit == "":
			return 0, fmt.Errorf("bandwidth %q has no unit; write it with bps, Kbps, Mbps or Gbps, like %sMbps", s, s)
		case number == "":
			return 0, fmt.Errorf("bandwidth %q is not a decimal number with a unit, like 100Mbps or 1.5Gbps", s)
		}
		for _, u := range bandwidthUnits {
			if strings.EqualFold(unit, u.suffix) {
				return 0, fmt.Errorf("bandwidth %q: units are case-sensitive; write %s%s", s, number, u.suffix)
			}
		}
		return 0, fmt.Errorf("bandwidth %q has no known unit; use bps, Kbps, Mbps or Gbps, like 100Mbps", s)
	}
	if strings.HasPrefix(number, "-") {
		return 0, fmt.Errorf("bandwidth %q is negative; it must be above zero", s)
	}
	whole, frac, _ := strings.Cut(number, ".")
	if whole == "" && frac == "" || !allDigits(whole) || !allDigits(frac) {
		return 0, fmt.Errorf("bandwidth %q is not a decimal number with a unit, like 100Mbps or 1.5Gbps", s)
	}
	// Exact decimal arithmetic: 1.1Gbps must be 1100000000, not a float's
	// nearest neighbour.
	value, ok := uint64(0), true
	if whole != "" {
		w, err := strconv.ParseUint(whole, 10, 64)
		if err != nil {
			ok = false
		}
		value, ok = mulOK(w, scale, ok)
	}
	fracScale := scale
	for _, d := range frac {
		digit := uint64(d - '0')
		if fracScale%10 != 0 {
			if digit != 0 {
				return 0, fmt.Errorf("bandwidth %q is not a whole number of bits per second", s)
			}
			continue
		}
		fracScale /= 10
		var add uint64
		add, ok = mulOK(digit, fracScale, ok)
		if value > math.MaxUint64-add {
			ok = false
		}
		value += add
	}
	if !ok {
		return 0, fmt.Errorf("bandwidth %q is too large", s)
	}
	if value == 0 {
		return 0, fmt.Errorf("bandwidth %q is zero; it must be above zero", s)
	}
	return Bandwidth(value), nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func mulOK(a, b uint64, ok bool) (uint64, bool) {
	if a != 0 && b > math.MaxUint64/a {
		return 0, false
	}
	return a * b, ok
}

// String prints the rate in the largest unit that keeps it exact to three
// decimals, the way it would be written in a config: "60Mbps", "1.5Gbps".
func (b Bandwidth) String() string {
	for i := len(bandwidthUnits) - 2; i >= 0; i-- { // Gbps, Mbps, Kbps
		u := bandwidthUnits[i]
		if uint64(b) >= u.scale && uint64(b)%(u.scale/1000) == 0 {
			return trimDecimal(float64(b)/float64(u.scale)) + u.suffix
		}
	}
	return strconv.FormatUint(uint64(b), 10) + "bps"
}

func trimDecimal(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}
