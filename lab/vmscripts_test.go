package lab

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The VM lab's provisioning scripts, run in namespaces standing in for a
// VM: a NIC found by MAC and renamed, a VPC host namespace taking its own
// NIC, an on-premises host behind the router. (vm-gateway.sh and
// vm-router.sh write /etc and systemd units, so they run on VMs only.)
func TestVMScriptsInNamespaces(t *testing.T) {
	o := privileged(t)
	p := o.Prefix
	vm, peer, host, onprem := p+"vm", p+"peer", p+"host", p+"onprem"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := &runner{log: o.Logger}
	must := func(argv ...string) {
		t.Helper()
		if err := r.run(ctx, argv...); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{vm, peer} {
		must("ip", "netns", "add", ns)
	}
	// Namespaces made by hand are not the lab's (Down removes only what a
	// lab's state or plan names): the test removes its own.
	t.Cleanup(func() {
		for _, ns := range []string{vm, peer} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	must("ip", "-n", vm, "link", "set", "lo", "up") // as on a VM
	const mac1, mac2 = "52:54:00:0c:00:01", "52:54:00:0c:00:02"
	must("ip", "-n", vm, "link", "add", "eth1", "address", mac1, "type", "veth", "peer", "name", "p1", "netns", peer)
	must("ip", "-n", vm, "link", "add", "eth2", "address", mac2, "type", "veth", "peer", "name", "p2", "netns", peer)
	must("ip", "-n", peer, "addr", "add", "10.255.0.99/24", "dev", "p1")
	must("ip", "-n", peer, "addr", "add", "10.1.0.1/16", "dev", "p2")
	must("ip", "-n", peer, "link", "set", "p1", "up")
	must("ip", "-n", peer, "link", "set", "p2", "up")
	s := "../scripts/lab/"
	// nsenter switches only the network namespace, like a VM's root
	// namespace (ip netns exec would hide the namespaces the scripts add).
	inVM := []string{"nsenter", "--net=/run/netns/" + vm, "sh"}
	for range 2 { // idempotent
		must(append(inVM, s+"vm-iface.sh", strings.ToUpper(mac1), "ocl-ul", "10.255.0.11/24")...)
		must(append(inVM, s+"vm-host.sh", host, mac2, "10.1.0.10/16,10.1.16.10/16", "10.1.0.1", "10.2.0.0/16", "192.168.0.0/16")...)
		must(append(inVM, s+"vm-onprem.sh", onprem, "192.168.1.1/24", "192.168.1.10/24", "192.168.100.1", "10.1.0.0/16")...)
	}
	// vm-host.sh and vm-onprem.sh made named namespaces: clean them too.
	t.Cleanup(func() {
		for _, ns := range []string{host, onprem} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	l := &Lab{Namespaces: []string{vm, peer, host, onprem}}
	for _, c := range []struct{ from, to string }{
		{vm, "10.255.0.99"}, {host, "10.1.0.1"}, {onprem, "192.168.1.1"}, {vm, "192.168.100.1"},
	} {
		if err := ping(ctx, l, c.from, c.to); err != nil {
			t.Errorf("%s -> %s: %v", c.from, c.to, err)
		}
	}
	if out, err := l.Exec(ctx, host, "ip", "-4", "addr", "show", "dev", "ocl-lan"); err != nil || !strings.Contains(string(out), "10.1.0.10/16") || !strings.Contains(string(out), "10.1.16.10/16") {
		t.Errorf("VPC host addresses (one homed at each gateway): %v %s", err, out)
	}
	out, err := l.Exec(ctx, host, "ip", "route", "show", "10.2.0.0/16")
	if err != nil || !strings.Contains(string(out), "via 10.1.0.1 dev ocl-lan") {
		t.Errorf("VPC host route: %v %s", err, out)
	}
	out, err = l.Exec(ctx, onprem, "ip", "route", "show", "10.1.0.0/16")
	if err != nil || !strings.Contains(string(out), "via 192.168.1.1 dev ocl-lan") {
		t.Errorf("on-premises host route: %v %s", err, out)
	}
	if out, err := l.Exec(ctx, vm, "ip", "link", "show", "eth2"); err == nil {
		t.Errorf("the VPC host's NIC stayed in the VM: %s", out)
	}
	if err := exec.Command(inVM[0], append(inVM[1:], s+"vm-iface.sh", "52:54:00:0c:00:77", "ocl-x")...).Run(); err == nil {
		t.Error("vm-iface.sh accepted a MAC no NIC has")
	}
}
