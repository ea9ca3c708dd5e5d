#!/usr/bin/env python3
"""Trial: cost of building the closure image with bookworm's erofs-utils 1.5, which has no
dumpfile input: a staging tree of sparse files carrying trusted.overlay.metacopy/redirect, then
`mkfs.erofs --chunksize=4096`, then removing the tree. Root only (trusted.* xattrs).

  bench/trials/erofs-utils-staging-cost.py N
"""
import os, sys, time, shutil, subprocess, tempfile
n = int(sys.argv[1])
w = tempfile.mkdtemp(dir="/var/tmp", prefix="staging-")
store = os.path.join(w, "store"); os.mkdir(store)
names = [f"{i:032d}-p{i}" for i in range(n)]
for x in names:
    os.makedirs(os.path.join(store, x, "bin"))
    open(os.path.join(store, x, "data"), "w").write(f"content of {x}\n")
    open(os.path.join(store, x, "bin", "run"), "w").write("#!/bin/sh\n")
t0 = time.perf_counter()
stage = os.path.join(w, "stage", "nix", "store")
os.makedirs(stage)
for x in names:
    for root, dirs, files in os.walk(os.path.join(store, x)):
        rel = os.path.relpath(root, store)
        os.makedirs(os.path.join(stage, rel), exist_ok=True)
        for f in files:
            src = os.path.join(root, f); dst = os.path.join(stage, rel, f)
            st = os.lstat(src)
            open(dst, "w").close(); os.truncate(dst, st.st_size); os.chmod(dst, st.st_mode & 0o7777)
            os.setxattr(dst, "trusted.overlay.metacopy", b"")
            os.setxattr(dst, "trusted.overlay.redirect", ("/" + rel + "/" + f).encode())
t1 = time.perf_counter()
subprocess.run(["mkfs.erofs", "--quiet", "--chunksize=4096", os.path.join(w, "img"), os.path.join(w, "stage")], check=True)
t2 = time.perf_counter()
shutil.rmtree(os.path.join(w, "stage"))
t3 = time.perf_counter()
print(f"{n} paths: staging tree {1000*(t1-t0):.0f} ms, mkfs.erofs 1.5 {1000*(t2-t1):.0f} ms, removing the tree {1000*(t3-t2):.0f} ms, image {os.path.getsize(os.path.join(w,'img'))//1024} KiB")
shutil.rmtree(w)
