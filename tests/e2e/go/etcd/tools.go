//go:build tools

// Package etcd pins go.etcd.io/etcd/server/v3 for tests/e2e/build.sh.
//
// The module root of go.etcd.io/etcd/server/v3 is the etcd main package,
// which cannot be imported; its etcdmain package is what it runs.
package etcd

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
)
