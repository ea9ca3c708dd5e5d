import { performance } from "node:perf_hooks";
import { Code } from "@connectrpc/connect";
import type { NixStore } from "@nix-snapshotter/nix-store";
import type { NixStorePort, Snapshotter } from "@nix-snapshotter/snapshotter";
import { nixStorePortFrom } from "@nix-snapshotter/snapshotter";
import type { CallObserver } from "./grpc-server.js";
import { type Registry, realiseBuckets, rpcBuckets } from "./metrics.js";

function codeLabel(code: Code | undefined): string {
  return code === undefined ? "OK" : (Code[code] ?? String(code));
}

/** The daemon's series; names follow Prometheus conventions, prefixed `nix_snapshotter_`. */
export function createDaemonMetrics(registry: Registry) {
  const requests = registry.counter(
    "nix_snapshotter_grpc_requests_total",
    "gRPC calls handled, by service, method and status code.",
    ["service", "method", "code"],
  );
  const latency = registry.histogram(
    "nix_snapshotter_grpc_request_duration_seconds",
    "gRPC call latency in seconds (streams: until the last message), by method and status code.",
    ["service", "method", "code"],
    rpcBuckets,
  );
  const realiseDuration = registry.histogram(
    "nix_snapshotter_realise_duration_seconds",
    "Duration of one batch realisation of a nix layer's store paths, by result.",
    ["result"],
    realiseBuckets,
  );
  const realisedPaths = registry.counter(
    "nix_snapshotter_realise_paths_total",
    "Store paths requested in realisations.",
  );
  const substitutedPaths = registry.counter(
    "nix_snapshotter_paths_substituted_total",
    "Store paths Nix substituted from a binary cache during realisations.",
  );
  const builtPaths = registry.counter(
    "nix_snapshotter_derivations_built_total",
    "Derivations Nix built during realisations.",
  );

  // The series of each (service, method, code) seen, bound once: a call finds its own by one
  // lookup instead of building and serialising its label set (routed methods only: bounded).
  const bound = new Map<string, (seconds: number) => void>();
  const series = (service: string, method: string, code: Code | undefined) => {
    const key = `${service}/${method}/${code ?? ""}`;
    let record = bound.get(key);
    if (record === undefined) {
      const labels = { service, method, code: codeLabel(code) };
      const count = requests.bind(labels);
      const time = latency.bind(labels);
      record = (seconds) => {
        count();
        time(seconds);
      };
      bound.set(key, record);
    }
    return record;
  };

  /**
   * Counts and times one call when it ends (the server's {@link CallObserver}): errors included,
   * streams after their last message.
   */
  const observe: CallObserver = (service, method, start, code) => {
    series(service, method, code)((performance.now() - start) / 1000);
  };

  /** The snapshotter's view of Nix, with realisations timed and counted. */
  const observedNixStore = (nixStore: NixStore): NixStorePort => {
    const port = nixStorePortFrom(nixStore);
    return {
      ...port,
      async realise(paths, { owner, signal }) {
        const start = performance.now();
        try {
          // The caller's signal too: without it a cancelled or timed-out Prepare left Nix running.
          const result = await nixStore.realise(
            paths,
            signal ? { roots: { owner }, signal } : { roots: { owner } },
          );
          realiseDuration.observe({ result: "ok" }, (performance.now() - start) / 1000);
          realisedPaths.inc({}, paths.length);
          substitutedPaths.inc({}, result.substituted.length);
          builtPaths.inc({}, result.built.length);
        } catch (error) {
          realiseDuration.observe({ result: "error" }, (performance.now() - start) / 1000);
          throw error;
        }
      },
    };
  };

  const snapshotsByKind = (snapshotter: Snapshotter) =>
    registry.collectedGauge(
      "nix_snapshotter_snapshots",
      "Snapshots by kind (active, committed, view).",
      async () => {
        const counts = new Map<string, number>([
          ["active", 0],
          ["committed", 0],
          ["view", 0],
        ]);
        for await (const info of snapshotter.list()) {
          counts.set(info.kind, (counts.get(info.kind) ?? 0) + 1);
        }
        return [...counts].map(([kind, value]) => ({ labels: { kind }, value }));
      },
    );

  return { observe, observedNixStore, snapshotsByKind, requests, realiseDuration };
}
