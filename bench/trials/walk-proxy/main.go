// Trial (not part of `pnpm bench`): how long one Walk of a proxy snapshotter takes from
// containerd's own client, the call containerd's garbage collector makes after every removal.
// Built in GOPATH mode from Debian's containerd 1.6 sources by walk-proxy.mjs.
//
//	walk-proxy <socket> <layers> <labels> <plain> <walks>
//	    makes <layers> committed snapshots with <labels> labels each (keys and values the size of
//	    the per-path annotation form's `containerd.io/snapshot/nix-store-path.<i>` labels, under
//	    another prefix so that no snapshotter reads them as a nix layer) and <plain> committed
//	    snapshots without labels, then Walks the snapshotter <walks> times on each of two
//	    connections: grpc-go's defaults (as containerd dials a proxy plugin: 64 KiB initial
//	    windows, grown by BDP estimation) and 16 MiB initial windows (no flow-control wait for a
//	    1.6 MB response). Alternates the two; removes what it made. Prints one JSON line.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "walk-proxy:", err)
	os.Exit(1)
}

func dial(socket string, window int32) *grpc.ClientConn {
	options := []grpc.DialOption{
		grpc.WithInsecure(),
		grpc.WithContextDialer(func(ctx context.Context, address string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", address)
		}),
		grpc.WithAuthority("localhost"),
		grpc.WithBlock(),
		grpc.WithTimeout(30 * time.Second),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
	}
	if window > 0 {
		options = append(options, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	}
	conn, err := grpc.Dial(socket, options...)
	if err != nil {
		fail(err)
	}
	return conn
}

func number(text string) int {
	value, err := strconv.Atoi(text)
	if err != nil || value < 0 {
		fail(fmt.Errorf("not a number >= 0: %q", text))
	}
	return value
}

func median(values []float64) float64 {
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	return sorted[len(sorted)/2]
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: walk-proxy <socket> <layers> <labels> <plain> <walks>")
		os.Exit(2)
	}
	socket := os.Args[1]
	layers, labelCount, plain, walks := number(os.Args[2]), number(os.Args[3]), number(os.Args[4]), number(os.Args[5])
	ctx := namespaces.WithNamespace(context.Background(), "walk")
	defaults := dial(socket, 0)
	defer defaults.Close()
	wide := dial(socket, 16<<20)
	defer wide.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(defaults), "walk")
	snWide := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(wide), "walk")

	made := []string{}
	defer func() {
		for i := len(made) - 1; i >= 0; i-- {
			if err := sn.Remove(ctx, made[i]); err != nil {
				fmt.Fprintln(os.Stderr, "walk-proxy: remove", made[i], err)
			}
		}
	}()
	pid := strconv.Itoa(os.Getpid())
	for layer := 0; layer < layers+plain; layer++ {
		labels := map[string]string{}
		if layer < layers {
			for i := 0; i < labelCount; i++ {
				labels["containerd.io/snapshot/walk-label."+strconv.Itoa(i)] =
					fmt.Sprintf("/nix/store/%032d-bench-start-%d", i, i)
			}
		}
		key := fmt.Sprintf("walk-%s-active-%d", pid, layer)
		name := fmt.Sprintf("walk-%s-committed-%d", pid, layer)
		if _, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(labels)); err != nil {
			fail(err)
		}
		if err := sn.Commit(ctx, name, key, snapshots.WithLabels(labels)); err != nil {
			fail(err)
		}
		made = append(made, name)
	}

	walk := func(s snapshots.Snapshotter) (float64, int, int) {
		infos, labels := 0, 0
		start := time.Now()
		if err := s.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			infos++
			labels += len(info.Labels)
			return nil
		}); err != nil {
			fail(err)
		}
		return float64(time.Since(start).Microseconds()) / 1000, infos, labels
	}
	// Warm both connections up (the BDP estimator grows the default window on the first walks).
	walk(sn)
	walk(snWide)
	var msDefault, msWide []float64
	infos, labels := 0, 0
	for i := 0; i < walks; i++ {
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, isWide := range order {
			if isWide {
				ms, _, _ := walk(snWide)
				msWide = append(msWide, ms)
			} else {
				ms, n, l := walk(sn)
				msDefault = append(msDefault, ms)
				infos, labels = n, l
			}
		}
	}
	out, _ := json.Marshal(map[string]interface{}{
		"infos":           infos,
		"labels":          labels,
		"walks":           walks,
		"msDefaultMedian": median(msDefault),
		"msWideMedian":    median(msWide),
		"msDefault":       msDefault,
		"msWide":          msWide,
	})
	fmt.Println(string(out))
}
