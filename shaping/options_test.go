package shaping

import (
	"slices"
	"testing"
	"time"
)

func TestOptionsErrors(t *testing.T) {
	for _, o := range []Options{
		{PinPath: "/x"},
		{Interface: "wg0", Attach: "xdp"},
		{Interface: "wg0", Attach: PathUserspace},
		{Interface: "wg0", PinPath: "/x", Mode: 7},
		{Interface: "wg0", PinPath: "/x", QueueDelay: -time.Second},
		{Interfaces: []string{}, PinPath: "/x"},
		{Interface: "wg0", Interfaces: []string{"vx0"}, PinPath: "/x"},
		{Interface: "wg0", Interfaces: []string{"wg0", "vx0"}, PinPath: "/x"},
		{Interfaces: []string{"wg0", "wg0"}, PinPath: "/x"},
		{Interfaces: []string{"wg0", ""}, PinPath: "/x"},
		{Interfaces: []string{"a/b"}, PinPath: "/x"},
	} {
		if err := o.defaults(); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	for _, c := range []struct {
		o    Options
		want []string
	}{
		{Options{Interface: "wg0", PinPath: "/x"}, []string{"wg0"}},
		{Options{Interfaces: []string{"vx0", "wg0"}, PinPath: "/x"}, []string{"vx0", "wg0"}},
		{Options{Interface: "wg0", Interfaces: []string{"wg0"}, PinPath: "/x"}, []string{"wg0"}},
	} {
		if err := c.o.defaults(); err != nil {
			t.Errorf("options %+v: %v", c.o, err)
		} else if !slices.Equal(c.o.Interfaces, c.want) {
			t.Errorf("options %+v: interfaces %q, want %q", c.o, c.o.Interfaces, c.want)
		}
	}
	if _, err := NewLimiter(LimiterOptions{MTU: -1}); err == nil {
		t.Error("negative mtu accepted")
	}
}
