// Command cutover is the reverse proxy and the deploy tool in one binary.
package main

import (
	"fmt"
	"os"

	"github.com/cutover/cutover/internal/cli"
)

func main() {
	root := cli.NewRoot(cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cutover:", err)
		os.Exit(cli.ExitCode(err))
	}
}
