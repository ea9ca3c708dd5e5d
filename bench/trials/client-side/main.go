// Trial (not part of `pnpm bench`): the client's share of `ctr run` before its Prepare, per
// image: what `ctr run` does between containerd's "stat snapshot" and "prepare snapshot" log
// lines. Built in GOPATH mode from Debian's containerd 1.6 sources; run by
// bench/src/start-annotation-forms.ts when BENCH_FORMS_CLIENT_SIDE=1.
//
//	client-side <containerd socket> <namespace> <runs> <snapshotter>=<image> ...
//
// For each image, `runs` times (images interleaved): the image's RootFS (reads and decodes the
// manifest and the config from containerd's content store, as `IsUnpacked`, `WithImageConfigLabels`
// and `WithNewSnapshot` each do), and the Stat of its top snapshot (`IsUnpacked`; every label of
// the top layer comes back). Prints one JSON line with the medians in ms.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/opencontainers/image-spec/identity"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "client-side:", err)
	os.Exit(1)
}

func median(values []float64) float64 {
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	return sorted[len(sorted)/2]
}

func ms(start time.Time) float64 { return float64(time.Since(start).Microseconds()) / 1000 }

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: client-side <socket> <namespace> <runs> <snapshotter>=<image> ...")
		os.Exit(2)
	}
	runs, err := strconv.Atoi(os.Args[3])
	if err != nil || runs < 1 {
		fail(fmt.Errorf("runs: %q", os.Args[3]))
	}
	client, err := containerd.New(os.Args[1], containerd.WithTimeout(30*time.Second))
	if err != nil {
		fail(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), os.Args[2])
	type target struct {
		snapshotter, name string
		rootfs, stat       []float64
		labels             int
	}
	targets := []*target{}
	for _, arg := range os.Args[4:] {
		parts := strings.SplitN(arg, "=", 2)
		if len(parts) != 2 {
			fail(fmt.Errorf("not <snapshotter>=<image>: %q", arg))
		}
		targets = append(targets, &target{snapshotter: parts[0], name: parts[1]})
	}
	for run := 0; run <= runs; run++ {
		for _, t := range targets {
			image, err := client.GetImage(ctx, t.name)
			if err != nil {
				fail(err)
			}
			start := time.Now()
			diffIDs, err := image.RootFS(ctx)
			if err != nil {
				fail(err)
			}
			rootfs := ms(start)
			start = time.Now()
			info, err := client.SnapshotService(t.snapshotter).Stat(ctx, identity.ChainID(diffIDs).String())
			if err != nil {
				fail(err)
			}
			stat := ms(start)
			if run > 0 { // run 0 warms up
				t.rootfs = append(t.rootfs, rootfs)
				t.stat = append(t.stat, stat)
			}
			t.labels = len(info.Labels)
		}
	}
	out := map[string]interface{}{}
	for _, t := range targets {
		out[t.name] = map[string]interface{}{
			"rootfsMs": median(t.rootfs),
			"statMs":   median(t.stat),
			"labels":   t.labels,
		}
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
