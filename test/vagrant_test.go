package test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The VM lab's Vagrantfile must stay valid: `vagrant validate` from the
// checkout root, where Vagrant is installed (CI installs it).
func TestVagrantfileValidates(t *testing.T) {
	vagrant, err := exec.LookPath("vagrant")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must install vagrant (and vagrant-libvirt) to validate the Vagrantfile")
		}
		t.Skip("vagrant is not installed; `apt-get install vagrant vagrant-libvirt` to check the Vagrantfile")
	}
	cmd := exec.Command(vagrant, "validate")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Vagrantfile validated successfully") {
		t.Fatalf("vagrant validate: %v\n%s", err, out)
	}
}
