//go:build tools

// Package kubeapiserver pins k8s.io/kubernetes for tests/e2e/build.sh.
//
// The blank imports keep `go mod tidy` from dropping the requirement and
// make go.sum cover every package that cmd/kube-apiserver links.
package kubeapiserver

import (
	_ "k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
)
