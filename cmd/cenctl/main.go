// Command cenctl is the operator's command for opencen: it validates and
// explains config files, and (as the agent grows) shows a gateway's live
// state and runs the lab.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
