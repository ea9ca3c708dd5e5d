import { mkdir, symlink } from "node:fs/promises";
import { dirname } from "node:path";
import { ErrorCode } from "@nix-snapshotter/errdefs";
import { createMemoryFileSystem, type StoreFileSystem } from "@nix-snapshotter/image-builder";
import type { NixSteps } from "../image-service.js";
import { type InputsCheck, NixError } from "../nix.js";

/**
 * TEST DOUBLE of the registry's Nix steps (unit tests only): a package set of three store paths
 * held in a memory file system. It records every call, and `build` can be held open to test
 * concurrent requests.
 */
export const storePaths = {
  busybox: "/nix/store/0c9i9mps7g6z3l3x4bh4yadrdrqzp9q5-busybox",
  hello: "/nix/store/1xh3qd2y5n6drp0kb3ks96mlpgm4rv0x-hello",
  closureInfo: "/nix/store/2h0v8z8mq3b1d3ay9jkxs0b74yqd0bbr-closure-info",
} as const;

export interface FakeNix {
  steps: NixSteps;
  fileSystem: StoreFileSystem;
  calls: { step: string; names?: readonly string[]; system?: string }[];
  builds(): number;
  /** While set, builds wait for this promise. */
  hold: Promise<void> | undefined;
  /** Makes the next builds fail with this error. */
  failWith: Error | undefined;
  /** Systems whose builds fail as Nix fails for a platform it cannot build for. */
  failSystems: Set<string>;
}

export function createFakeNix(options: { closureInfo?: boolean } = {}): FakeNix {
  const packages: Record<string, { outPath: string; closure: string[] }> = {
    busybox: { outPath: storePaths.busybox, closure: [storePaths.busybox] },
    hello: { outPath: storePaths.hello, closure: [storePaths.busybox, storePaths.hello] },
  };
  const fileSystem = createMemoryFileSystem({
    [`${storePaths.busybox}/bin/busybox`]: { type: "file", data: "busybox" },
    [`${storePaths.busybox}/bin/sh`]: { type: "symlink", target: "busybox" },
    [`${storePaths.hello}/bin/hello`]: { type: "file", data: "#!/bin/sh\n" },
    [`${storePaths.closureInfo}/store-paths`]: {
      type: "file",
      data: `${storePaths.busybox}\n${storePaths.hello}\n`,
    },
  });
  const fake: FakeNix = {
    fileSystem,
    calls: [],
    builds: () => fake.calls.filter((call) => call.step === "build").length,
    hold: undefined,
    failWith: undefined,
    failSystems: new Set(),
    steps: {
      async revision(tag) {
        fake.calls.push({ step: "revision", names: [tag] });
        return { revision: `fake-revision-${tag}` };
      },
      async check(names, system): Promise<InputsCheck> {
        fake.calls.push({ step: "check", names, system });
        const expanded = names.flatMap((name) => (name === "shell" ? ["busybox"] : [name]));
        const unique = [...new Set(expanded)];
        const missing = unique.filter((name) => !(name in packages) && name !== "lib");
        const notPackages = unique.filter((name) => name === "lib");
        const ok = missing.length === 0 && notPackages.length === 0;
        return {
          missing,
          notPackages,
          names: unique,
          outPaths: ok ? unique.map((name) => packages[name]!.outPath) : [],
          closureInfo: ok && options.closureInfo ? storePaths.closureInfo : null,
        };
      },
      async build(names, system, _source, outLink) {
        fake.calls.push({ step: "build", names, system });
        await fake.hold;
        if (fake.failWith) throw fake.failWith;
        if (fake.failSystems.has(system)) {
          throw new NixError(
            ErrorCode.Unknown,
            `nix-build failed (1): error: a '${system}' with features {} is required to build it`,
          );
        }
        await mkdir(dirname(outLink), { recursive: true });
        await symlink(storePaths.hello, outLink);
      },
      async exportPaths(paths) {
        fake.calls.push({ step: "export", names: paths });
      },
      // A local package set: no branches or git tags (the git path runs against real git, e2e).
      async refNames() {
        return [];
      },
      async closure(paths) {
        fake.calls.push({ step: "closure" });
        const all = new Set<string>();
        for (const path of paths) {
          const entry = Object.values(packages).find((item) => item.outPath === path);
          for (const member of entry?.closure ?? []) all.add(member);
        }
        return [...all].sort();
      },
    },
  };
  return fake;
}
