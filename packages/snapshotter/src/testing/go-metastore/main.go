// Writes bolt files and snapshotter roots the way the Go nix-snapshotter does, with the
// containerd and bbolt sources that Debian packages (golang-github-containerd-containerd-dev).
// Built by the tests in GOPATH mode; see go-metastore.ts.
//
//	go-metastore shapes <file>            bolt file with inline, wide, overflow and nested buckets
//	go-metastore root <dir> <path>...     Go-style root: plain layer, nix layer (GC roots made with
//	                                      nix-store --add-root), active container, view
//	go-metastore many <dir> <n>           root with n committed layers and n views
//	go-metastore dump <dir>               prints the MetaStore of <dir> as JSON lines
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/storage"
	bolt "go.etcd.io/bbolt"
)

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-metastore:", err)
		os.Exit(1)
	}
}

func shapes(file string) {
	db, err := bolt.Open(file, 0o600, nil)
	check(err)
	defer db.Close()
	check(db.Update(func(tx *bolt.Tx) error {
		inline, err := tx.CreateBucket([]byte("inline"))
		if err != nil {
			return err
		}
		if err := inline.Put([]byte("a"), []byte("1")); err != nil {
			return err
		}
		if err := inline.Put([]byte("b"), []byte("2")); err != nil {
			return err
		}
		wide, err := tx.CreateBucket([]byte("wide"))
		if err != nil {
			return err
		}
		for i := 0; i < 3000; i++ {
			if err := wide.Put([]byte(fmt.Sprintf("key-%05d", i)), []byte(fmt.Sprintf("value-%05d", i))); err != nil {
				return err
			}
		}
		big := make([]byte, 20000)
		for i := range big {
			big[i] = byte(i % 251)
		}
		overflow, err := tx.CreateBucket([]byte("overflow"))
		if err != nil {
			return err
		}
		if err := overflow.Put([]byte("big"), big); err != nil {
			return err
		}
		outer, err := tx.CreateBucket([]byte("outer"))
		if err != nil {
			return err
		}
		if err := outer.SetSequence(42); err != nil {
			return err
		}
		middle, err := outer.CreateBucket([]byte("middle"))
		if err != nil {
			return err
		}
		inner, err := middle.CreateBucket([]byte("inner"))
		if err != nil {
			return err
		}
		if err := inner.Put([]byte("leaf"), []byte("deep")); err != nil {
			return err
		}
		// A nested bucket too big to be inline, beside plain keys.
		for i := 0; i < 400; i++ {
			if err := middle.Put([]byte(fmt.Sprintf("m-%04d", i)), []byte(fmt.Sprintf("%0100d", i))); err != nil {
				return err
			}
		}
		return outer.Put([]byte("plain"), []byte("value"))
	}))
}

type snapshotDirs struct {
	root string
}

// create makes a snapshot the way containerd's overlay snapshotter lays it out:
// snapshots/<id>/fs, plus work for active snapshots.
func (d snapshotDirs) create(ctx context.Context, ms *storage.MetaStore, kind snapshots.Kind, key, parent string, labels map[string]string) string {
	ctx, t, err := ms.TransactionContext(ctx, true)
	check(err)
	s, err := storage.CreateSnapshot(ctx, kind, key, parent, snapshots.WithLabels(labels))
	check(err)
	dir := filepath.Join(d.root, "snapshots", s.ID)
	check(os.MkdirAll(filepath.Join(dir, "fs"), 0o755))
	if kind == snapshots.KindActive {
		check(os.MkdirAll(filepath.Join(dir, "work"), 0o711))
	}
	check(t.Commit())
	return s.ID
}

func (d snapshotDirs) commit(ctx context.Context, ms *storage.MetaStore, name, key string, size, inodes int64, labels map[string]string) {
	ctx, t, err := ms.TransactionContext(ctx, true)
	check(err)
	_, err = storage.CommitActive(ctx, key, name, snapshots.Usage{Size: size, Inodes: inodes}, snapshots.WithLabels(labels))
	check(err)
	check(t.Commit())
}

func writeFile(path, content string) {
	check(os.MkdirAll(filepath.Dir(path), 0o755))
	check(os.WriteFile(path, []byte(content), 0o644))
}

func root(dir string, storePaths []string) {
	ctx := context.Background()
	check(os.MkdirAll(filepath.Join(dir, "snapshots"), 0o700))
	ms, err := storage.NewMetaStore(filepath.Join(dir, "metadata.db"))
	check(err)
	defer ms.Close()
	d := snapshotDirs{root: dir}

	// An ordinary layer, unpacked then committed.
	id := d.create(ctx, ms, snapshots.KindActive, "extract-1 sha256:aaa", "", map[string]string{"containerd.io/snapshot.ref": "sha256:aaa"})
	writeFile(filepath.Join(dir, "snapshots", id, "fs", "etc", "hello"), "hello from layer 1\n")
	d.commit(ctx, ms, "sha256:aaa", "extract-1 sha256:aaa", 4096, 3, map[string]string{"containerd.io/snapshot.ref": "sha256:aaa", "example": "plain"})

	// A nix layer: labels name store paths; each gets a GC root made the Go way.
	labels := map[string]string{"containerd.io/snapshot.ref": "sha256:bbb", "containerd.io/snapshot/nix-layer": "true"}
	for i, p := range storePaths {
		labels["containerd.io/snapshot/nix-store-path."+strconv.Itoa(i)] = p
	}
	id = d.create(ctx, ms, snapshots.KindActive, "extract-2 sha256:bbb", "sha256:aaa", labels)
	for _, p := range storePaths {
		link := filepath.Join(dir, "gcroots", id, filepath.Base(p))
		check(os.MkdirAll(filepath.Dir(link), 0o755))
		out, err := exec.Command("nix-store", "--add-root", link, "--realise", p).CombinedOutput()
		if err != nil {
			check(fmt.Errorf("nix-store --add-root %s --realise %s: %v\n%s", link, p, err, out))
		}
		check(os.MkdirAll(filepath.Join(dir, "snapshots", id, "fs", p[1:]), 0o755))
	}
	d.commit(ctx, ms, "sha256:bbb", "extract-2 sha256:bbb", 8192, 5, labels)

	// A container: active, with data in its upper directory.
	id = d.create(ctx, ms, snapshots.KindActive, "container-1", "sha256:bbb", map[string]string{"containerd.io/gc.root": "2024-01-01T00:00:00Z"})
	writeFile(filepath.Join(dir, "snapshots", id, "fs", "data", "state.txt"), "container state\n")

	// A view.
	d.create(ctx, ms, snapshots.KindView, "view-1", "sha256:bbb", nil)
}

func many(dir string, n int) {
	ctx := context.Background()
	check(os.MkdirAll(filepath.Join(dir, "snapshots"), 0o700))
	ms, err := storage.NewMetaStore(filepath.Join(dir, "metadata.db"))
	check(err)
	defer ms.Close()
	d := snapshotDirs{root: dir}
	parent := ""
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("extract-%d", i)
		name := fmt.Sprintf("sha256:%064d", i)
		d.create(ctx, ms, snapshots.KindActive, key, parent, map[string]string{"index": strconv.Itoa(i)})
		d.commit(ctx, ms, name, key, int64(i*10), int64(i), map[string]string{"index": strconv.Itoa(i), "containerd.io/gc.ref.content.l": fmt.Sprintf("sha256:%064d", i)})
		d.create(ctx, ms, snapshots.KindView, fmt.Sprintf("view-%d", i), name, nil)
		// Every tenth layer starts a new chain.
		if i%10 == 9 {
			parent = ""
		} else {
			parent = name
		}
	}
	// A removed snapshot: the sequence is past the last id in use.
	ctx2, t, err := ms.TransactionContext(ctx, true)
	check(err)
	_, err = storage.CreateSnapshot(ctx2, snapshots.KindActive, "removed", "")
	check(err)
	_, _, err = storage.Remove(ctx2, "removed")
	check(err)
	check(t.Commit())
}

type record struct {
	Key     string            `json:"key"`
	ID      string            `json:"id"`
	Kind    string            `json:"kind"`
	Parent  string            `json:"parent"`
	Labels  map[string]string `json:"labels"`
	Created string            `json:"created"`
	Updated string            `json:"updated"`
	Size    int64             `json:"size"`
	Inodes  int64             `json:"inodes"`
}

func dump(dir string) {
	ctx := context.Background()
	ms, err := storage.NewMetaStore(filepath.Join(dir, "metadata.db"))
	check(err)
	defer ms.Close()
	ctx, t, err := ms.TransactionContext(ctx, false)
	check(err)
	defer t.Rollback()
	var keys []string
	check(storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
		keys = append(keys, info.Name)
		return nil
	}))
	encoder := json.NewEncoder(os.Stdout)
	for _, key := range keys {
		id, info, usage, err := storage.GetInfo(ctx, key)
		check(err)
		labels := info.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		check(encoder.Encode(record{key, id, info.Kind.String(), info.Parent, labels,
			strconv.FormatInt(info.Created.UnixNano(), 10), strconv.FormatInt(info.Updated.UnixNano(), 10), usage.Size, usage.Inodes}))
	}
}

func main() {
	if len(os.Args) < 3 {
		check(fmt.Errorf("usage: go-metastore shapes|root|many|dump <path> [args]"))
	}
	switch os.Args[1] {
	case "shapes":
		shapes(os.Args[2])
	case "root":
		root(os.Args[2], os.Args[3:])
	case "many":
		n, err := strconv.Atoi(os.Args[3])
		check(err)
		many(os.Args[2], n)
	case "dump":
		dump(os.Args[2])
	default:
		check(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
