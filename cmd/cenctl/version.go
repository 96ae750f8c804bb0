package main

import (
	"fmt"
	"io"

	"github.com/opencen/opencen/internal/buildinfo"
	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print cenctl's version and the commit it is built from",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return emit(cmd, output, buildinfo.Get(), func(w io.Writer, i buildinfo.Info) { fmt.Fprintln(w, "cenctl", i) })
		},
	}
	outputFlag(cmd, &output)
	return cmd
}
