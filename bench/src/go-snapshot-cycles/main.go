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
//	    With GO_SNAPSHOT_CYCLES_CALLS=1 the line also has "calls": for each of the seven calls
//	    (Remove split into Remove(view) and Remove(committed)) and the whole cycle, the client's
//	    latency in milliseconds over the timed cycles, {"n", "mean", "p50", "p90", "p99"},
//	    measured around each proxy call (so it includes the client's own encoding and gRPC path).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
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

// The calls of a cycle in order, as named in the "calls" output; the last entry is the cycle.
var callNames = []string{"Prepare", "Mounts", "Commit", "View", "Stat", "Remove(view)", "Remove(committed)", "cycle"}

// cycle runs one cycle; with times non-nil it stores each call's duration (and the cycle's, last)
// in times, indexed as callNames.
func cycle(ctx context.Context, sn snapshots.Snapshotter, id string, times []time.Duration) error {
	key, name, view := "active-"+id, "committed-"+id, "view-"+id
	began := time.Now()
	last := began
	mark := func(call int) {
		if times != nil {
			now := time.Now()
			times[call] = now.Sub(last)
			last = now
		}
	}
	if _, err := sn.Prepare(ctx, key, ""); err != nil {
		return fmt.Errorf("prepare %s: %w", key, err)
	}
	mark(0)
	mounts, err := sn.Mounts(ctx, key)
	if err != nil {
		return fmt.Errorf("mounts %s: %w", key, err)
	}
	mark(1)
	if len(mounts) == 0 {
		return fmt.Errorf("mounts %s: none", key)
	}
	last = time.Now()
	if err := sn.Commit(ctx, name, key); err != nil {
		return fmt.Errorf("commit %s: %w", name, err)
	}
	mark(2)
	if _, err := sn.View(ctx, view, name); err != nil {
		return fmt.Errorf("view %s: %w", view, err)
	}
	mark(3)
	info, err := sn.Stat(ctx, name)
	if err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	mark(4)
	if info.Name != name {
		return fmt.Errorf("stat %s: named %q", name, info.Name)
	}
	last = time.Now()
	if err := sn.Remove(ctx, view); err != nil {
		return fmt.Errorf("remove %s: %w", view, err)
	}
	mark(5)
	if err := sn.Remove(ctx, name); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	mark(6)
	if times != nil {
		times[7] = time.Since(began)
	}
	return nil
}

// summary gives n, mean, p50, p90 and p99 in milliseconds (nearest rank) of the durations.
func summary(durations []time.Duration) map[string]float64 {
	if len(durations) == 0 {
		return map[string]float64{"n": 0}
	}
	sorted := append([]time.Duration(nil), durations...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(sorted))+0.999999) - 1
		if i < 0 {
			i = 0
		}
		return sorted[i]
	}
	return map[string]float64{
		"n":    float64(len(sorted)),
		"mean": ms(sum / time.Duration(len(sorted))),
		"p50":  ms(rank(0.5)),
		"p90":  ms(rank(0.9)),
		"p99":  ms(rank(0.99)),
	}
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
		if err := cycle(ctx, sn, fmt.Sprintf("%s-warm-%d", prefix, i), nil); err != nil {
			fail(err)
		}
	}
	timed := os.Getenv("GO_SNAPSHOT_CYCLES_CALLS") == "1"
	// One row of durations per timed cycle, written only by the worker that ran it.
	var times [][]time.Duration
	if timed {
		times = make([][]time.Duration, total)
		for i := range times {
			times[i] = make([]time.Duration, len(callNames))
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
				var row []time.Duration
				if timed {
					row = times[i]
				}
				if err := cycle(ctx, sn, fmt.Sprintf("%s-%d", prefix, i), row); err != nil {
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
	result := map[string]interface{}{
		"cycles":          float64(total),
		"seconds":         seconds,
		"cyclesPerSecond": float64(total) / seconds,
	}
	if timed {
		calls := map[string]interface{}{}
		for call, name := range callNames {
			column := make([]time.Duration, total)
			for i := range times {
				column[i] = times[i][call]
			}
			calls[name] = summary(column)
		}
		result["calls"] = calls
	}
	out, _ := json.Marshal(result)
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
