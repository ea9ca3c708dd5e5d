import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Registry, serveMetrics } from "./metrics.js";

function get(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    request(url, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          type: String(response.headers["content-type"]),
          body,
        }),
      );
    })
      .on("error", reject)
      .end();
  });
}

describe("Registry", () => {
  it("writes counters, histograms and collected gauges in the text format", async () => {
    const registry = new Registry();
    const counter = registry.counter("calls_total", "Calls.", ["method", "code"]);
    counter.inc({ method: "Stat", code: "OK" });
    counter.inc({ method: "Stat", code: "OK" });
    counter.inc({ method: "Stat", code: "NotFound" });
    const histogram = registry.histogram("latency_seconds", "Latency.", ["method"], [0.1, 1]);
    histogram.observe({ method: "Prepare" }, 0.05);
    histogram.observe({ method: "Prepare" }, 0.5);
    histogram.observe({ method: "Prepare" }, 5);
    registry.collectedGauge("snapshots", "Snapshots.", async () => [
      { labels: { kind: "active" }, value: 2 },
    ]);
    const text = await registry.render();
    expect(text).toContain("# TYPE calls_total counter\n");
    expect(text).toContain('calls_total{method="Stat",code="OK"} 2\n');
    expect(text).toContain('calls_total{method="Stat",code="NotFound"} 1\n');
    expect(text).toContain('latency_seconds_bucket{method="Prepare",le="0.1"} 1\n');
    expect(text).toContain('latency_seconds_bucket{method="Prepare",le="1"} 2\n');
    expect(text).toContain('latency_seconds_bucket{method="Prepare",le="+Inf"} 3\n');
    expect(text).toContain('latency_seconds_sum{method="Prepare"} 5.55\n');
    expect(text).toContain('latency_seconds_count{method="Prepare"} 3\n');
    expect(text).toContain('snapshots{kind="active"} 2\n');
    expect(text).toContain("nix_snapshotter_metrics_collect_errors 0\n");
  });

  it("bound series share their values with inc and observe, and exist once bound", async () => {
    const registry = new Registry();
    const counter = registry.counter("calls_total", "Calls.", ["method"]);
    const histogram = registry.histogram("latency_seconds", "Latency.", ["method"], [0.1, 1]);
    const count = counter.bind({ method: "Stat" });
    const time = histogram.bind({ method: "Stat" });
    // Bound and not yet used: the series is there at zero.
    expect(await registry.render()).toContain('calls_total{method="Stat"} 0\n');
    expect(counter.get({ method: "Stat" })).toBe(0);
    count();
    count(2);
    counter.inc({ method: "Stat" });
    time(0.05);
    histogram.observe({ method: "Stat" }, 0.5);
    time(5);
    expect(counter.get({ method: "Stat" })).toBe(4);
    expect(histogram.count({ method: "Stat" })).toBe(3);
    const text = await registry.render();
    expect(text).toContain('calls_total{method="Stat"} 4\n');
    expect(text).toContain('latency_seconds_bucket{method="Stat",le="0.1"} 1\n');
    expect(text).toContain('latency_seconds_bucket{method="Stat",le="1"} 2\n');
    expect(text).toContain('latency_seconds_count{method="Stat"} 3\n');
    expect(text).toContain('latency_seconds_sum{method="Stat"} 5.55\n');
  });

  it("escapes hostile label values and survives a failing collector", async () => {
    const registry = new Registry();
    registry.counter("c_total", "C.", ["key"]).inc({ key: 'a"b\\c\nd' });
    registry.collectedGauge("broken", "Broken.", async () => {
      throw new Error("database closed");
    });
    const text = await registry.render();
    expect(text).toContain('c_total{key="a\\"b\\\\c\\nd"} 1\n');
    expect(text).not.toContain("# TYPE broken");
    expect(text).toContain("nix_snapshotter_metrics_collect_errors 1\n");
  });
});

describe("serveMetrics", () => {
  it("serves /metrics on 127.0.0.1 and 404s other paths", async () => {
    const registry = new Registry();
    registry.counter("up_total", "Up.").inc();
    const server = await serveMetrics(registry, { host: "127.0.0.1", port: 0 });
    try {
      expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
      const ok = await get(`http://${server.address}/metrics`);
      expect(ok.status).toBe(200);
      expect(ok.type).toBe("text/plain; version=0.0.4; charset=utf-8");
      expect(ok.body).toContain("up_total 1\n");
      expect((await get(`http://${server.address}/../etc/passwd`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});

describe("serveMetrics on a socket path", () => {
  it("refuses to replace a file that is not a socket", async () => {
    const directory = await mkdtemp(join(tmpdir(), "metrics-"));
    try {
      const path = join(directory, "not-a-socket");
      await writeFile(path, "keep me");
      await expect(serveMetrics(new Registry(), { path })).rejects.toThrow("is not a socket");
      expect(await readFile(path, "utf8")).toBe("keep me");
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
