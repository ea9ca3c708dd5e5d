// The Go reference of the snapshot-cycles benchmark, built by bench/src/proxy-cycles.ts in GOPATH
// mode from Debian's containerd 1.6 sources (golang-github-containerd-containerd-dev).
//
//	go-snapshot-cycles serve <root> <socket>
//	    containerd's own overlay snapshotter (snapshots/overlay, default options) served over the
//	    proxy Snapshots API (contrib/snapshotservice) on a unix socket, until SIGTERM.
//	go-snapshot-cycles cycles <socket> <concurrency> <total> <prefix>
//	    drives a proxy snapshotter through containerd's own client (snapshots/proxy) the way
//	    containerd does: one gRPC connection, `concurrency` workers, `total` cycles of
//	    Prepare + Mounts + Commit + View + Stat + Remove(view) + Remove(committed), after 5
//	    warm-up cycles. Prints one JSON line: {"cycles": n, "seconds": s, "cyclesPerSecond": r}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/overlay"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "go-snapshot-cycles:", err)
	os.Exit(1)
}

func serve(root, socket string) {
	sn, err := overlay.NewSnapshotter(root)
	if err != nil {
		fail(err)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(sn))
	listener, err := net.Listen("unix", socket)
	if err != nil {
		fail(err)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		server.GracefulStop()
	}()
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "go-snapshot-cycles:", err)
	}
	sn.Close()
	os.Remove(socket)
}

func cycle(ctx context.Context, sn snapshots.Snapshotter, id string) error {
	key, name, view := "active-"+id, "committed-"+id, "view-"+id
	if _, err := sn.Prepare(ctx, key, ""); err != nil {
		return fmt.Errorf("prepare %s: %w", key, err)
	}
	mounts, err := sn.Mounts(ctx, key)
	if err != nil {
		return fmt.Errorf("mounts %s: %w", key, err)
	}
	if len(mounts) == 0 {
		return fmt.Errorf("mounts %s: none", key)
	}
	if err := sn.Commit(ctx, name, key); err != nil {
		return fmt.Errorf("commit %s: %w", name, err)
	}
	if _, err := sn.View(ctx, view, name); err != nil {
		return fmt.Errorf("view %s: %w", view, err)
	}
	info, err := sn.Stat(ctx, name)
	if err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if info.Name != name {
		return fmt.Errorf("stat %s: named %q", name, info.Name)
	}
	if err := sn.Remove(ctx, view); err != nil {
		return fmt.Errorf("remove %s: %w", view, err)
	}
	if err := sn.Remove(ctx, name); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

func cycles(socket string, concurrency, total int, prefix string) {
	conn, err := grpc.Dial(socket,
		grpc.WithInsecure(),
		grpc.WithContextDialer(func(ctx context.Context, address string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", address)
		}),
		// containerd's own dial of a proxy plugin ("unix://<path>") sends ":authority: localhost";
		// this grpc-go would send the socket path, which HTTP/2 servers may refuse.
		grpc.WithAuthority("localhost"),
		grpc.WithBlock(),
		grpc.WithTimeout(30*time.Second),
	)
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "bench")
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	for i := 0; i < 5; i++ {
		if err := cycle(ctx, sn, fmt.Sprintf("%s-warm-%d", prefix, i)); err != nil {
			fail(err)
		}
	}
	var next int64 = -1
	var failure atomic.Value
	var wait sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wait.Add(1)
		go func() {
			defer wait.Done()
			for {
				i := atomic.AddInt64(&next, 1)
				if i >= int64(total) || failure.Load() != nil {
					return
				}
				if err := cycle(ctx, sn, fmt.Sprintf("%s-%d", prefix, i)); err != nil {
					failure.Store(err)
					return
				}
			}
		}()
	}
	wait.Wait()
	seconds := time.Since(start).Seconds()
	if err, ok := failure.Load().(error); ok {
		fail(err)
	}
	out, _ := json.Marshal(map[string]float64{
		"cycles":          float64(total),
		"seconds":         seconds,
		"cyclesPerSecond": float64(total) / seconds,
	})
	fmt.Println(string(out))
}

func number(text string) int {
	value, err := strconv.Atoi(text)
	if err != nil || value <= 0 {
		fail(fmt.Errorf("not a positive number: %q", text))
	}
	return value
}

func main() {
	switch {
	case len(os.Args) == 4 && os.Args[1] == "serve":
		serve(os.Args[2], os.Args[3])
	case len(os.Args) == 6 && os.Args[1] == "cycles":
		cycles(os.Args[2], number(os.Args[3]), number(os.Args[4]), os.Args[5])
	default:
		fmt.Fprintln(os.Stderr, "usage: go-snapshot-cycles serve <root> <socket> | cycles <socket> <concurrency> <total> <prefix>")
		os.Exit(2)
	}
}
