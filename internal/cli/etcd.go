package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/remote"
	"github.com/cutover/cutover/internal/controlplane/state/etcdstore"
	"github.com/spf13/cobra"
)

// etcdHelp says what --etcd does, for the commands that take it.
const etcdHelp = "change the desired state in etcd yourself instead of through one instance: the etcd members' client URLs, comma-separated (e.g. https://10.0.0.5:2379,https://10.0.0.6:2379). " +
	"The command takes the deploy lock, every live instance checks the pool and reports, and the switch is one compare-and-swap that every instance applies. " +
	"TLS files and user come from store.etcd of -c FILE, which also gives the active pool of a service not switched yet"

// etcdTarget holds --etcd and --etcd-prefix.
type etcdTarget struct {
	endpoints string
	prefix    string
}

func (e *etcdTarget) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.endpoints, "etcd", "", etcdHelp)
	cmd.Flags().StringVar(&e.prefix, "etcd-prefix", config.DefaultEtcdPrefix, "with --etcd: the key prefix the instances share (their store.etcd.prefix; default: -c FILE's, else this)")
}

// operator is what deploy, rollback, promote and abort ask: one
// instance's admin API, or etcd itself (package remote).
type operator interface {
	Deploy(ctx context.Context, req admin.DeployRequest, onEvent func(admin.Event)) (*admin.DeployResult, error)
	Rollback(ctx context.Context, req admin.RollbackRequest, onEvent func(admin.Event)) (*admin.DeployResult, error)
	Promote(ctx context.Context, req admin.TrialRequest, onEvent func(admin.Event)) (*admin.DeployResult, error)
	Abort(ctx context.Context, req admin.TrialRequest, onEvent func(admin.Event)) (*admin.DeployResult, error)
}

// remoteOperator is a remote.Client with its store, closed after use.
type remoteOperator struct {
	*remote.Client
	store *etcdstore.Store
}

// open connects to etcd as --etcd, --etcd-prefix and -c FILE say.
func (e *etcdTarget) open(cmd *cobra.Command, at adminTarget) (*remoteOperator, error) {
	if at.socket != "" {
		return nil, &exitError{code: 2, err: errors.New("--etcd and --socket both given — --etcd changes the state in etcd itself, --socket asks one instance: give one")}
	}
	ec := config.Etcd{Prefix: config.DefaultEtcdPrefix}
	var cfg *config.Config
	if at.config != "" {
		var err error
		if cfg, err = config.Load(at.config, os.LookupEnv); err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("-c %s: %w", at.config, err)}
		}
		if cfg.Store != nil && cfg.Store.Etcd != nil {
			ec = *cfg.Store.Etcd
		}
	}
	ec.Endpoints = nil
	for _, ep := range strings.Split(e.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			ec.Endpoints = append(ec.Endpoints, ep)
		}
	}
	if cmd.Flags().Changed("etcd-prefix") {
		ec.Prefix = e.prefix
	}
	if err := ec.Validate(); err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--etcd %s: %w", e.endpoints, err)}
	}
	o, err := etcdstore.ConnOptions(&ec)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	o.Instance = fmt.Sprintf("cli@%s/%d", config.DefaultInstance(), os.Getpid())
	st, err := etcdstore.OpenClient(cmd.Context(), o)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("%w — nothing changed; check --etcd and that the etcd members run", err)}
	}
	return &remoteOperator{Client: remote.New(remote.Options{Store: st, Name: o.Instance, Config: cfg}), store: st}, nil
}

func (r *remoteOperator) Close() { r.store.Close() }

// operator is the instance's admin API, or etcd with --etcd; close ends
// its connections.
func (e *etcdTarget) operator(cmd *cobra.Command, at adminTarget) (op operator, close func(), err error) {
	if e.endpoints != "" {
		r, err := e.open(cmd, at)
		if err != nil {
			return nil, nil, err
		}
		return r, r.Close, nil
	}
	c, err := at.client()
	if err != nil {
		return nil, nil, err
	}
	return c, c.Close, nil
}
