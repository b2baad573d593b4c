package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/spf13/cobra"
)

// SocketEnv names the environment variable that gives the admin socket.
const SocketEnv = "CUTOVER_SOCKET"

// adminTarget holds the flags every client command uses to find the admin
// socket of the running cutover.
type adminTarget struct {
	socket string
	config string
}

func (a *adminTarget) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.socket, "socket", "", "admin socket of the running cutover (default: $"+SocketEnv+", else admin.socket of -c FILE)")
	cmd.Flags().StringVarP(&a.config, "config", "c", "", "configuration file of the running cutover; its admin.socket is used")
}

// socketPath finds the admin socket: --socket, then $CUTOVER_SOCKET, then
// admin.socket of the -c configuration file.
func (a *adminTarget) socketPath() (string, error) {
	if a.socket != "" {
		return a.socket, nil
	}
	if v := os.Getenv(SocketEnv); v != "" {
		return v, nil
	}
	if a.config != "" {
		cfg, err := config.Load(a.config, os.LookupEnv)
		if err != nil {
			return "", &exitError{code: 2, err: fmt.Errorf("cannot find the admin socket from %s: %w", a.config, err)}
		}
		// The file may be the one a container runs with, whose paths are
		// the container's: say so rather than "no cutover is running".
		if _, err := os.Stat(cfg.Admin.Socket); errors.Is(err, fs.ErrNotExist) {
			return "", &exitError{code: 2, err: fmt.Errorf("no admin socket at %s (admin.socket of %s): no cutover runs with this configuration on this host — if it runs in a container, that path is the container's: give the host path of the folder mounted there with --socket PATH or %s=PATH, or write state_dir relative to the configuration file so it means the same folder inside and out", cfg.Admin.Socket, a.config, SocketEnv)}
		}
		return cfg.Admin.Socket, nil
	}
	return "", &exitError{code: 2, err: errors.New("which cutover? give its admin socket with --socket PATH, or set " + SocketEnv + "=PATH, or give its configuration file with -c FILE (its admin.socket is used)")}
}

func (a *adminTarget) client() (*admin.Client, error) {
	path, err := a.socketPath()
	if err != nil {
		return nil, err
	}
	return admin.NewUnixClient(path), nil
}

// apiError gives an admin API error its exit code: 2 when cutover could
// not be reached or the request was malformed, 1 when the operation was
// refused or failed.
func apiError(err error) error {
	var ue *admin.UnreachableError
	if errors.As(err, &ue) {
		return &exitError{code: 2, err: err}
	}
	var ce *admin.Error
	if errors.As(err, &ce) && ce.Kind == admin.KindInvalid {
		return &exitError{code: 2, err: err}
	}
	return &exitError{code: 1, err: err}
}

// noArgs rejects positional arguments with a message naming the one given.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &exitError{code: 2, err: fmt.Errorf("unexpected argument %q — see cutover %s --help", args[0], cmd.Name())}
	}
	return nil
}
