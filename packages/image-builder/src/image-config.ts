import type { ContainerConfig, Platform } from "@nix-snapshotter/oci";

const goArchitectures: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ia32: "386",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
  loong64: "loong64",
  mips: "mips",
  mipsel: "mipsle",
};

/** The build host's platform in OCI (Go) terms: `process.arch` x64 -> amd64, ia32 -> 386... */
export function hostPlatform(): Pick<Platform, "architecture" | "os"> {
  return {
    architecture: goArchitectures[process.arch] ?? process.arch,
    os: process.platform === "win32" ? "windows" : process.platform,
  };
}

function envName(entry: string): string {
  const equals = entry.indexOf("=");
  return equals < 0 ? entry : entry.slice(0, equals);
}

function sortedKeys<T>(record: Record<string, T>): Record<string, T> {
  const result: Record<string, T> = {};
  for (const key of Object.keys(record).sort()) {
    // defineProperty: a `__proto__` key must stay an ordinary key.
    Object.defineProperty(result, key, {
      value: record[key],
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return result;
}

/**
 * Merges an image's container config over its base image's, field by field:
 * - `Env`: by variable name; a variable set by the image replaces the base's in place, new ones
 *   are appended in the image's order.
 * - `ExposedPorts`, `Volumes`, `Labels`: merged by key, the image's values win.
 * - `Entrypoint`, `Cmd`, `WorkingDir`, `User`, `StopSignal`, `ArgsEscaped`: the image's value
 *   when set, else the base's. As in a Dockerfile, setting `Entrypoint` without `Cmd` drops the
 *   base's `Cmd` (it was an argument list for the base's entrypoint).
 */
export function mergeContainerConfig(
  base: ContainerConfig | undefined,
  image: ContainerConfig,
): ContainerConfig {
  const result: ContainerConfig = {};
  const from = base ?? {};
  const user = image.User ?? from.User;
  if (user !== undefined) result.User = user;
  const ports =
    from.ExposedPorts || image.ExposedPorts
      ? { ...from.ExposedPorts, ...image.ExposedPorts }
      : undefined;
  if (ports !== undefined) result.ExposedPorts = sortedKeys(ports);
  if (from.Env !== undefined || image.Env !== undefined) {
    const env = [...(from.Env ?? [])];
    for (const entry of image.Env ?? []) {
      const index = env.findIndex((existing) => envName(existing) === envName(entry));
      if (index >= 0) env[index] = entry;
      else env.push(entry);
    }
    result.Env = env;
  }
  const entrypoint = image.Entrypoint ?? from.Entrypoint;
  if (entrypoint !== undefined) result.Entrypoint = entrypoint;
  const cmd = image.Cmd ?? (image.Entrypoint === undefined ? from.Cmd : undefined);
  if (cmd !== undefined) result.Cmd = cmd;
  const volumes = from.Volumes || image.Volumes ? { ...from.Volumes, ...image.Volumes } : undefined;
  if (volumes !== undefined) result.Volumes = sortedKeys(volumes);
  const workingDir = image.WorkingDir ?? from.WorkingDir;
  if (workingDir !== undefined) result.WorkingDir = workingDir;
  const labels = from.Labels || image.Labels ? { ...from.Labels, ...image.Labels } : undefined;
  if (labels !== undefined) result.Labels = sortedKeys(labels);
  const stopSignal = image.StopSignal ?? from.StopSignal;
  if (stopSignal !== undefined) result.StopSignal = stopSignal;
  const argsEscaped = image.ArgsEscaped ?? from.ArgsEscaped;
  if (argsEscaped !== undefined) result.ArgsEscaped = argsEscaped;
  return result;
}
