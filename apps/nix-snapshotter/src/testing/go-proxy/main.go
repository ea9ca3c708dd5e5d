// A stand-in for the Go nix-snapshotter, built by the tests from Debian's containerd source
// (golang-github-containerd-containerd-dev) in GOPATH mode: containerd's overlay snapshotter,
// whose MetaStore is the bolt schema the Go nix-snapshotter keeps in <root>/metadata.db, served
// over the proxy Snapshots API on a unix socket. Like the Go nix-snapshotter, Prepare of a
// snapshot labelled as a nix layer makes one GC root per store path, the Go way:
// `nix-store --add-root <root>/gcroots/<id>/<hash>-<name> --realise <path>`.
//
//	go-proxy <root> <socket>
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

const (
	nixLayerLabel  = "containerd.io/snapshot/nix-layer"
	nixStorePrefix = "containerd.io/snapshot/nix-store-path."
)

type nixSnapshotter struct {
	snapshots.Snapshotter
	root string
}

var snapshotDir = regexp.MustCompile(`/snapshots/([0-9]+)/fs`)

// idOf finds the snapshot id in the mounts overlay returns (its upper or bind directory).
func idOf(mounts []mount.Mount) (string, error) {
	for _, m := range mounts {
		for _, s := range append([]string{m.Source}, m.Options...) {
			if strings.HasPrefix(s, "upperdir=") || m.Type == "bind" {
				if match := snapshotDir.FindStringSubmatch(s); match != nil {
					return match[1], nil
				}
			}
		}
	}
	return "", fmt.Errorf("no snapshot directory in mounts %v", mounts)
}

func (o *nixSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, opt := range opts {
		if err := opt(&base); err != nil {
			return nil, err
		}
	}
	mounts, err := o.Snapshotter.Prepare(ctx, key, parent, opts...)
	if err != nil {
		return nil, err
	}
	if _, ok := base.Labels[nixLayerLabel]; !ok {
		return mounts, nil
	}
	id, err := idOf(mounts)
	if err != nil {
		return nil, err
	}
	for label, storePath := range base.Labels {
		if !strings.HasPrefix(label, nixStorePrefix) {
			continue
		}
		link := filepath.Join(o.root, "gcroots", id, filepath.Base(storePath))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return nil, err
		}
		out, err := exec.Command("nix-store", "--add-root", link, "--realise", storePath).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("nix-store --add-root %s --realise %s: %v: %s", link, storePath, err, out)
		}
	}
	fmt.Fprintf(os.Stderr, "go-proxy: prepared nix layer %q (id %s)\n", key, id)
	return mounts, nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go-proxy <root> <socket>")
		os.Exit(2)
	}
	root, socket := os.Args[1], os.Args[2]
	sn, err := overlay.NewSnapshotter(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-proxy:", err)
		os.Exit(1)
	}
	service := snapshotservice.FromSnapshotter(&nixSnapshotter{Snapshotter: sn, root: root})
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, service)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-proxy:", err)
		os.Exit(1)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		server.GracefulStop()
	}()
	fmt.Fprintln(os.Stderr, "go-proxy: serving on", socket)
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "go-proxy:", err)
	}
	sn.Close()
	os.Remove(socket)
}
