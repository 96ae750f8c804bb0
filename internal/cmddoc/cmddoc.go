// Package cmddoc writes a command's manual pages from its cobra command
// tree, so the pages packaging ships say what the binary does: a hidden
// `man DIR` command of cend and cenctl, run by make deb.
package cmddoc

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// ManCommand is `PROG man DIR`: it writes PROG.1 and a page per visible
// subcommand (PROG-SUB.1) into DIR.
func ManCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the manual pages into DIR (for packaging)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root.DisableAutoGenTag = true // the pages of one build stay byte for byte the same
			hdr := &doc.GenManHeader{Title: root.Name(), Section: "1", Source: "opencen", Manual: "opencen manual"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		},
	}
}
