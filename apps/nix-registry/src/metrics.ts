/** The registry's counters, written in Prometheus' text format at `/metrics`. */
export interface RegistryMetrics {
  request(route: string, status: number): void;
  event(name: "build" | "cacheHit" | "buildFailure" | "shared" | "refusedName" | "throttled"): void;
  gauge(name: string, help: string, read: () => number): void;
  render(): string;
}

export function createMetrics(): RegistryMetrics {
  const requests = new Map<string, number>();
  const events = new Map<string, number>();
  const gauges: { name: string; help: string; read: () => number }[] = [];
  const eventHelp: Record<string, string> = {
    build: "Images built with Nix (cache misses that ran nix-build)",
    cacheHit: "Manifest requests served from the cache",
    buildFailure: "Image builds that failed (unknown packages, Nix errors, timeouts)",
    shared: "Requests that waited for a build another request had started",
    refusedName: "Requests refused before Nix because of their name",
    throttled: "Requests refused because their client had too many in flight",
  };
  const snake = (name: string) => name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
  return {
    request(route, status) {
      const key = `route="${route}",code="${status}"`;
      requests.set(key, (requests.get(key) ?? 0) + 1);
    },
    event(name) {
      events.set(name, (events.get(name) ?? 0) + 1);
    },
    gauge(name, help, read) {
      gauges.push({ name, help, read });
    },
    render() {
      const lines = [
        "# HELP nix_registry_requests_total HTTP requests by route and status code",
        "# TYPE nix_registry_requests_total counter",
        ...[...requests].map(
          ([labels, value]) => `nix_registry_requests_total{${labels}} ${value}`,
        ),
      ];
      for (const [name, help] of Object.entries(eventHelp)) {
        const metric = `nix_registry_${snake(name)}_total`;
        lines.push(`# HELP ${metric} ${help}`, `# TYPE ${metric} counter`);
        lines.push(`${metric} ${events.get(name) ?? 0}`);
      }
      for (const gauge of gauges) {
        lines.push(`# HELP ${gauge.name} ${gauge.help}`, `# TYPE ${gauge.name} gauge`);
        lines.push(`${gauge.name} ${gauge.read()}`);
      }
      return `${lines.join("\n")}\n`;
    },
  };
}
