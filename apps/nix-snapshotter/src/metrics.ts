import { createServer, type Server } from "node:http";
import { claimSocketPath } from "./grpc-server.js";

/**
 * A small Prometheus registry writing the text exposition format (version 0.0.4): counters,
 * histograms and gauges with labels, and gauges computed at scrape time. Enough for the daemon's
 * handful of series without a dependency.
 */

type Labels = Record<string, string>;

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function formatLabels(labels: Labels, extra?: [string, string]): string {
  const entries = Object.entries(labels);
  if (extra) entries.push(extra);
  if (entries.length === 0) return "";
  return `{${entries.map(([key, value]) => `${key}="${escapeLabelValue(value)}"`).join(",")}}`;
}

function formatNumber(value: number): string {
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function labelKey(names: readonly string[], labels: Labels): string {
  return JSON.stringify(names.map((name) => labels[name] ?? ""));
}

interface Metric {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  render(): Promise<string[]> | string[];
}

export class Counter {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[] = [],
  ) {}

  inc(labels: Labels = {}, amount = 1): void {
    this.entry(labels).value += amount;
  }

  /**
   * The series of `labels`, made now (at 0) when new, as a function adding to it: for a hot
   * path that counts the same series again and again without finding it each time.
   */
  bind(labels: Labels): (amount?: number) => void {
    const entry = this.entry(labels);
    return (amount = 1) => {
      entry.value += amount;
    };
  }

  private entry(labels: Labels): { labels: Labels; value: number } {
    const key = labelKey(this.labelNames, labels);
    let entry = this.values.get(key);
    if (entry === undefined) {
      entry = { labels: pick(this.labelNames, labels), value: 0 };
      this.values.set(key, entry);
    }
    return entry;
  }

  get(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels))?.value ?? 0;
  }

  render(): string[] {
    return [...this.values.values()].map(
      ({ labels, value }) => `${this.name}${formatLabels(labels)} ${formatNumber(value)}`,
    );
  }
}

export class Histogram {
  private readonly values = new Map<
    string,
    { labels: Labels; counts: number[]; sum: number; count: number }
  >();
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    private readonly buckets: readonly number[],
  ) {}

  observe(labels: Labels, value: number): void {
    this.record(this.entry(labels), value);
  }

  /** The series of `labels`, made now (empty) when new, as a function observing into it. */
  bind(labels: Labels): (value: number) => void {
    const entry = this.entry(labels);
    return (value) => this.record(entry, value);
  }

  private entry(labels: Labels) {
    const key = labelKey(this.labelNames, labels);
    let entry = this.values.get(key);
    if (!entry) {
      entry = {
        labels: pick(this.labelNames, labels),
        counts: this.buckets.map(() => 0),
        sum: 0,
        count: 0,
      };
      this.values.set(key, entry);
    }
    return entry;
  }

  private record(entry: { counts: number[]; sum: number; count: number }, value: number): void {
    const { buckets } = this;
    for (let index = 0; index < buckets.length; index++) {
      if (value <= (buckets[index] as number)) entry.counts[index]! += 1;
    }
    entry.sum += value;
    entry.count += 1;
  }

  count(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels))?.count ?? 0;
  }

  render(): string[] {
    const lines: string[] = [];
    for (const { labels, counts, sum, count } of this.values.values()) {
      this.buckets.forEach((bound, index) => {
        lines.push(
          `${this.name}_bucket${formatLabels(labels, ["le", formatNumber(bound)])} ${counts[index]}`,
        );
      });
      lines.push(`${this.name}_bucket${formatLabels(labels, ["le", "+Inf"])} ${count}`);
      lines.push(`${this.name}_sum${formatLabels(labels)} ${formatNumber(sum)}`);
      lines.push(`${this.name}_count${formatLabels(labels)} ${count}`);
    }
    return lines;
  }
}

/** A gauge whose samples are computed when scraped. */
export class CollectedGauge {
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly collect: () => Promise<Array<{ labels: Labels; value: number }>>,
  ) {}

  async render(): Promise<string[]> {
    const samples = await this.collect();
    return samples.map(
      ({ labels, value }) => `${this.name}${formatLabels(labels)} ${formatNumber(value)}`,
    );
  }
}

function pick(names: readonly string[], labels: Labels): Labels {
  const result: Labels = {};
  for (const name of names) result[name] = labels[name] ?? "";
  return result;
}

export class Registry {
  private readonly metrics: Metric[] = [];

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    const counter = new Counter(name, help, labelNames);
    this.metrics.push({ name, help, type: "counter", render: () => counter.render() });
    return counter;
  }

  histogram(
    name: string,
    help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
  ): Histogram {
    const histogram = new Histogram(name, help, labelNames, buckets);
    this.metrics.push({ name, help, type: "histogram", render: () => histogram.render() });
    return histogram;
  }

  collectedGauge(
    name: string,
    help: string,
    collect: () => Promise<Array<{ labels: Labels; value: number }>>,
  ): CollectedGauge {
    const gauge = new CollectedGauge(name, help, collect);
    this.metrics.push({ name, help, type: "gauge", render: () => gauge.render() });
    return gauge;
  }

  /** The whole registry in the text exposition format. A failing collector is skipped (and
   * reported as `nix_snapshotter_metrics_collect_errors`), never failing the scrape. */
  async render(): Promise<string> {
    const out: string[] = [];
    let collectErrors = 0;
    for (const metric of this.metrics) {
      let lines: string[];
      try {
        lines = await metric.render();
      } catch {
        collectErrors++;
        continue;
      }
      out.push(`# HELP ${metric.name} ${metric.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`);
      out.push(`# TYPE ${metric.name} ${metric.type}`);
      out.push(...lines);
    }
    out.push(
      "# HELP nix_snapshotter_metrics_collect_errors Collectors that failed in this scrape.",
    );
    out.push("# TYPE nix_snapshotter_metrics_collect_errors gauge");
    out.push(`nix_snapshotter_metrics_collect_errors ${collectErrors}`);
    return `${out.join("\n")}\n`;
  }
}

/** Seconds buckets for RPC latencies: 0.5 ms to 60 s. */
export const rpcBuckets = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];
/** Seconds buckets for Nix realisations: 10 ms to 30 min. */
export const realiseBuckets = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800];

export interface MetricsServer {
  server: Server;
  /** `host:port` actually bound (port 0 resolved) or the socket path. */
  address: string;
  close(): Promise<void>;
}

/** Serves `GET /metrics` (and `/`) with the registry's text; anything else is 404. */
export async function serveMetrics(
  registry: Registry,
  address: { path: string } | { host: string; port: number },
): Promise<MetricsServer> {
  const server = createServer((request, response) => {
    const url = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (url !== "/metrics" && url !== "/") {
      response.writeHead(404).end("not found\n");
      return;
    }
    registry.render().then(
      (text) => {
        response
          .writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" })
          .end(request.method === "HEAD" ? undefined : text);
      },
      (error: unknown) => {
        response.writeHead(500).end(`${String(error)}\n`);
      },
    );
  });
  // A stale socket is replaced; a live one or a file that is not a socket is an error.
  if ("path" in address) await claimSocketPath(address.path);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if ("path" in address) server.listen(address.path, resolve);
    else server.listen(address.port, address.host, resolve);
  });
  const bound = server.address();
  const text =
    typeof bound === "string"
      ? bound
      : bound
        ? `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`
        : "";
  return {
    server,
    address: text,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
