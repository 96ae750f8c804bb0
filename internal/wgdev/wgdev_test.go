package wgdev

import "testing"

func TestName(t *testing.T) {
	a, b := Name("cen-demo/gw-beijing-1"), Name("cen-demo/gw-beijing-2")
	if len(a) != 15 || a[:3] != "ocw" {
		t.Errorf("Name = %q, want ocw and 12 hex digits", a)
	}
	if a == b {
		t.Errorf("two gateways share device name %q", a)
	}
	if a != Name("cen-demo/gw-beijing-1") {
		t.Error("Name is not stable")
	}
	if got, want := Socket(a), UAPIDir+"/"+a+".sock"; got != want {
		t.Errorf("Socket = %q, want %q", got, want)
	}
}
