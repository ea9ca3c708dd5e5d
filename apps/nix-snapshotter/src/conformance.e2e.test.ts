import { runConformanceSuite } from "@nix-snapshotter/snapshotter/testing";
import { startDaemonProcess } from "./testing/daemon-process.js";

// containerd's snapshotter behaviour, checked over gRPC against the daemon process: every call
// crosses the unix socket as containerd's proxy plugin makes it.
for (const mountMode of ["bind", "hardlink"] as const) {
  runConformanceSuite(`daemon over gRPC, ${mountMode} mode`, async () => {
    const daemon = await startDaemonProcess({ mountMode });
    return { snapshotter: daemon.snapshotter, cleanup: daemon.cleanup };
  });
}
