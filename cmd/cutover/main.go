// Command cutover is the reverse proxy and the deploy tool in one binary.
package main

import (
	"fmt"
	"os"

	// The image is FROM scratch, without the system's CA certificates:
	// these roots are used only when the system has none, so tls.acme can
	// verify Let's Encrypt's directory there too.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/cutover/cutover/internal/cli"
)

func main() {
	root := cli.NewRoot(cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cutover:", err)
		os.Exit(cli.ExitCode(err))
	}
}
