#!/usr/bin/env bash
# Build the kube-apiserver and etcd binaries that the e2e suite runs (see docs/e2e.md).
#
#   tests/e2e/build.sh                  build whatever is missing from the cache, then exit
#   tests/e2e/build.sh --print          print the two binary paths (nothing is built)
#   tests/e2e/build.sh pin KUBE ETCD    rewrite the wrapper go.mod/go.sum for new versions,
#                                       e.g. `pin v1.37.2 v3.6.16`, then commit both files
#
# The versions come from the wrapper modules under tests/e2e/go/ (their go.mod and go.sum
# are committed, so builds are reproducible).  Binaries are cached outside the repository,
# keyed by version:
#
#   ${RK_E2E_CACHE:-/var/cache/resilient_kube/e2e}/kube-apiserver-vX.Y.Z
#   ${RK_E2E_CACHE:-/var/cache/resilient_kube/e2e}/etcd-vX.Y.Z
#
# When both exist the script does nothing, so a warm machine starts in seconds.  GOCACHE and
# GOMODCACHE keep their defaults so that a rebuild after a version bump reuses them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kas_dir=$here/go/kube-apiserver
etcd_dir=$here/go/etcd
cache=${RK_E2E_CACHE:-/var/cache/resilient_kube/e2e}

# The version a wrapper go.mod requires for module $2 (handles block and one-line requires).
required_version() {
    [[ -f $1/go.mod ]] || return 0
    awk -v m="$2" '$1 == "require" { $1 = ""; $0 = $0 } $1 == m { print $2; exit }' "$1/go.mod"
}

kube_version=$(required_version "$kas_dir" k8s.io/kubernetes)
etcd_version=$(required_version "$etcd_dir" go.etcd.io/etcd/server/v3)
kas_bin=$cache/kube-apiserver-$kube_version
etcd_bin=$cache/etcd-$etcd_version

need_go() {
    if ! command -v go >/dev/null 2>&1; then
        echo "build.sh: Go is not installed (needed to build kube-apiserver and etcd)" >&2
        exit 3
    fi
}

# pin KUBE_VERSION ETCD_VERSION: regenerate both wrapper modules.
pin() {
    local kube=$1 etcd=$2 gomod staging
    need_go
    # k8s.io/kubernetes requires every staging module (k8s.io/api, k8s.io/apiserver, ...) at
    # v0.0.0 and replaces it with ./staging/src/...; replace directives only apply inside the
    # main module, so this wrapper replaces each of them with its published v0.MINOR.PATCH tag.
    staging=v0.${kube#v1.}
    (
        cd "$kas_dir"
        rm -f go.mod go.sum
        go mod init resilient-kube.test/e2e/kube-apiserver
        # `go mod init` writes the local Go version; start low and let `go get` raise it to what
        # the dependencies need, so any Go that can build them works without a toolchain download.
        go mod edit -go=1.22
        gomod=$(go mod download -json "k8s.io/kubernetes@$kube" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
        for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod"); do
            go mod edit -replace="$m=$m@$staging"
        done
        go get "k8s.io/kubernetes@$kube"
        go mod tidy
    )
    (
        cd "$etcd_dir"
        rm -f go.mod go.sum
        go mod init resilient-kube.test/e2e/etcd
        go mod edit -go=1.22
        go get "go.etcd.io/etcd/server/v3@$etcd"
        go mod tidy
    )
    echo "pinned k8s.io/kubernetes $kube and go.etcd.io/etcd/server/v3 $etcd; now run $0"
}

# build_one OUT DIR PACKAGE LDFLAGS: build into a temporary file, then rename (atomic).
build_one() {
    local out=$1 dir=$2 pkg=$3 ldflags=$4 start=$SECONDS
    if [[ -x $out ]]; then
        return
    fi
    echo "build.sh: building $out (this takes a while on a cold cache)" >&2
    (cd "$dir" && GOFLAGS="-mod=mod -buildvcs=false" go build -p 2 -trimpath \
        -ldflags "$ldflags" -o "$out.tmp.$$" "$pkg")
    mv -f "$out.tmp.$$" "$out"
    echo "$(date -u +%FT%TZ) built $(basename "$out") in $((SECONDS - start)) s" | tee -a "$cache/build-times.log" >&2
}

case ${1:-} in
    --print)
        echo "$kas_bin"
        echo "$etcd_bin"
        exit 0
        ;;
    pin)
        pin "${2:?usage: build.sh pin KUBE_VERSION ETCD_VERSION}" "${3:?usage: build.sh pin KUBE_VERSION ETCD_VERSION}"
        exit 0
        ;;
    "") ;;
    *)
        echo "usage: $0 [--print | pin KUBE_VERSION ETCD_VERSION]" >&2
        exit 2
        ;;
esac

if [[ -x $kas_bin && -x $etcd_bin ]]; then
    exit 0
fi
need_go
mkdir -p "$cache"
# One build at a time per cache (parallel pytest runs wait here instead of building twice).
exec 9>"$cache/.lock"
flock 9

minor=${kube_version#v1.}
minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kube_ldflags+=" -X $pkg.gitTreeState=clean"
done
build_one "$etcd_bin" "$etcd_dir" go.etcd.io/etcd/server/v3 "-s -w"
build_one "$kas_bin" "$kas_dir" k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
