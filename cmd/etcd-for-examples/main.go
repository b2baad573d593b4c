// Command etcd-for-examples is etcd's own server (go.etcd.io/etcd/server/v3,
// the version in cutover's go.mod) as a static binary, so that the
// multi-host example can run an etcd cluster from an image FROM scratch
// without pulling etcd's image from a registry. It takes etcd's flags and
// ETCD_* variables unchanged.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
