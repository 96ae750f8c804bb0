package config

import (
	"strings"
	"testing"
)

func TestParseBandwidth(t *testing.T) {
	good := []struct {
		in   string
		want Bandwidth
	}{
		{"1bps", 1},
		{"1Kbps", 1_000},
		{"60Mbps", 60_000_000},
		{"1.5Gbps", 1_500_000_000},
		{"1.1Gbps", 1_100_000_000},
		{"0.5Kbps", 500},
		{"2.25Mbps", 2_250_000},
		{".5Mbps", 500_000},
		{"10 Mbps", 10_000_000},
		{"100.000Mbps", 100_000_000},
		{"18446744073709551615bps", 18446744073709551615},
	}
	for _, tc := range good {
		got, err := ParseBandwidth(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	bad := []struct{ in, want string }{
		{"100", "has no unit"},
		{"1.5", "has no unit"},
		{"100mbps", "case-sensitive; write 100Mbps"},
		{"100MBps", "case-sensitive"},
		{"100Tbps", "no known unit"},
		{"fast", "not a decimal number"},
		{"", "empty"},
		{"0Mbps", "is zero"},
		{"0.0Gbps", "is zero"},
		{"-5Mbps", "negative"},
		{"1.5bps", "not a whole number of bits per second"},
		{"0.0001Kbps", "not a whole number"},
		{"1e3Mbps", "not a decimal number"},
		{"1.2.3Mbps", "not a decimal number"},
		{"Mbps", "not a decimal number"},
		{"99999999999999999999Gbps", "too large"},
		{"18446744073709551616bps", "too large"},
	}
	for _, tc := range bad {
		_, err := ParseBandwidth(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseBandwidth(%q) error = %v; want it to say %q", tc.in, err, tc.want)
		}
	}
}

func TestBandwidthString(t *testing.T) {
	for _, tc := range []struct {
		in   Bandwidth
		want string
	}{
		{1000, "1Kbps"},
		{60_000_000, "60Mbps"},
		{1_500_000_000, "1.5Gbps"},
		{999, "999bps"},
		{1_234_567, "1234.567Kbps"},
		{2_250_000, "2.25Mbps"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("Bandwidth(%d).String() = %q, want %q", tc.in, got, tc.want)
		}
		if back, err := ParseBandwidth(tc.in.String()); err != nil || back != tc.in {
			t.Errorf("round trip of %d: %d, %v", tc.in, back, err)
		}
	}
}
