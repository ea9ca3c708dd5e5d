#!/usr/bin/env python3
"""Trial (not part of `pnpm bench`): what the kernel costs per container start in each way of
putting a closure into a rootfs, at several closure sizes. Root only; runs in a private mount
namespace, so nothing it mounts is seen outside or outlives it.

  bench/trials/erofs-mount-cost.py MKCOMPOSEFS [SIZES...]

For each size N, over a synthetic store of N paths (a directory, a file, an executable under
bin/):
  - overlay:   one overlay over a layer directory (what hardlink mode gives a container);
  - bind:      that overlay plus one read-only bind mount per store path, as containerd's shim
               makes them (bind, then read-only remount), then their unmounts (bind mode);
  - erofs:     the closure described by a composefs image (mkcomposefs from a dumpfile, regular
               files redirecting into the store), mounted once per layer (file-backed erofs), and
               per container one overlay `lowerdir=<layer>:<image>::<store>` with metacopy=on.
Each container-side figure is the median of the runs of mount + unmount. Also checks that only
the closure is visible through the erofs overlay and that a file's content comes from the store.
"""
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2


def mount(source, target, fstype, flags, data=None):
    result = libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {fstype} {source} on {target}: {os.strerror(errno)}")


def umount(target):
    if libc.umount2(target.encode(), 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"umount {target}: {os.strerror(errno)}")


def escape(text):
    out = []
    for byte in text.encode():
        if 0x20 < byte < 0x7F and byte not in (0x5C, 0x3D):
            out.append(chr(byte))
        else:
            out.append("\\x%02x" % byte)
    result = "".join(out)
    return "\\x2d" if result == "-" else result


def dump_line(path, st, payload):
    is_dir = (st.st_mode & 0o170000) == 0o040000
    size = 0 if is_dir else st.st_size
    return f"{escape(path)} {size} {st.st_mode:o} {2 if is_dir else 1} 0 0 0 {int(st.st_mtime)}.0 {payload} - -"


def dumpfile(store, names):
    """A composefs dumpfile of the store paths `names`: regular files redirect to the store."""
    lines = []
    root = os.stat("/")
    for directory in ["/", "/nix", "/nix/store"]:
        lines.append(dump_line(directory, root, "-"))
    for name in sorted(names):
        for walk_root, dirs, files in os.walk(os.path.join(store, name)):
            dirs.sort()
            relative_dir = os.path.relpath(walk_root, store)
            lines.append(dump_line(f"/nix/store/{relative_dir}", os.lstat(walk_root), "-"))
            for entry in sorted(files + [d for d in dirs if os.path.islink(os.path.join(walk_root, d))]):
                full = os.path.join(walk_root, entry)
                st = os.lstat(full)
                relative = f"{relative_dir}/{entry}"
                if os.path.islink(full):
                    payload = escape(os.readlink(full))
                elif st.st_size == 0:
                    payload = "-"
                else:
                    payload = escape(relative)
                lines.append(dump_line(f"/nix/store/{relative}", st, payload))
    return "\n".join(lines) + "\n"


def timed(work):
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) * 1000


def main():
    mkcomposefs = sys.argv[1]
    sizes = [int(size) for size in sys.argv[2:]] or [11, 101, 1001, 5001]
    runs = int(os.environ.get("TRIAL_RUNS", "7"))
    bind_runs = int(os.environ.get("TRIAL_BIND_RUNS", "3"))
    if libc.unshare(0x00020000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    work = tempfile.mkdtemp(prefix="erofs-trial-", dir="/var/tmp")
    try:
        store = os.path.join(work, "store")
        os.mkdir(store)
        names = [f"{i:032d}-p{i}" for i in range(max(sizes))]
        for name in names:
            os.makedirs(os.path.join(store, name, "bin"))
            with open(os.path.join(store, name, "data"), "w") as file:
                file.write(f"content of {name}\n")
            with open(os.path.join(store, name, "bin", "run"), "w") as file:
                file.write("#!/bin/sh\n")
            os.chmod(os.path.join(store, name, "bin", "run"), 0o555)
        # A store path outside every closure: must never be visible.
        os.makedirs(os.path.join(store, "outside-secret"))
        with open(os.path.join(store, "outside-secret", "data"), "w") as file:
            file.write("secret\n")
        print("paths | dumpfile ms | mkcomposefs ms | image KiB | erofs mount ms | overlay ms | erofs overlay ms | bind ms (mounts + unmounts)")
        for size in sizes:
            closure = names[:size]
            case = os.path.join(work, f"n{size}")
            layer, upper, workdir, merged, image_dir = (
                os.path.join(case, part) for part in ("layer", "upper", "work", "merged", "image")
            )
            for directory in (layer, upper, workdir, merged, image_dir):
                os.makedirs(directory)
            for name in closure:
                os.makedirs(os.path.join(layer, "nix", "store", name))
            dump_path = os.path.join(case, "closure.dump")
            image = os.path.join(case, "closure.erofs")
            text = ""

            def make_dump():
                nonlocal text
                text = dumpfile(store, closure)
                with open(dump_path, "w") as file:
                    file.write(text)

            dump_ms = timed(make_dump)
            build_ms = timed(
                lambda: subprocess.run([mkcomposefs, "--from-file", dump_path, image], check=True)
            )
            erofs_mount_ms = timed(lambda: mount(image, image_dir, "erofs", MS_RDONLY))

            plain = f"lowerdir={layer},upperdir={upper},workdir={workdir}"
            layered = f"lowerdir={layer}:{image_dir}::{store},upperdir={upper},workdir={workdir},metacopy=on"

            def cycle(options):
                def work_once():
                    mount("overlay", merged, "overlay", 0, options)
                    umount(merged)

                return statistics.median(timed(work_once) for _ in range(runs))

            overlay_ms = cycle(plain)
            erofs_ms = cycle(layered)

            # Isolation and content through the erofs overlay.
            mount("overlay", merged, "overlay", 0, layered)
            try:
                visible = sorted(os.listdir(os.path.join(merged, "nix", "store")))
                assert visible == sorted(closure), f"{len(visible)} visible, {size} expected"
                assert not os.path.exists(os.path.join(merged, "nix", "store", "outside-secret"))
                with open(os.path.join(merged, "nix", "store", closure[-1], "data")) as file:
                    assert file.read() == f"content of {closure[-1]}\n"
                assert os.access(os.path.join(merged, "nix", "store", closure[0], "bin", "run"), os.X_OK)
            finally:
                umount(merged)

            def bind_cycle():
                mount("overlay", merged, "overlay", 0, plain)
                targets = []
                for name in closure:
                    target = os.path.join(merged, "nix", "store", name)
                    mount(os.path.join(store, name), target, None, MS_BIND | MS_REC)
                    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
                    targets.append(target)
                for target in reversed(targets):
                    umount(target)
                umount(merged)

            bind_ms = statistics.median(timed(bind_cycle) for _ in range(bind_runs))
            umount(image_dir)
            print(
                f"{size} | {dump_ms:.1f} | {build_ms:.1f} | {os.path.getsize(image) // 1024} | "
                f"{erofs_mount_ms:.2f} | {overlay_ms:.2f} | {erofs_ms:.2f} | {bind_ms:.0f}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
