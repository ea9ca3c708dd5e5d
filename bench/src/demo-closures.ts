/**
 * Helper of `scripts/demo`: builds the demo's packages into the local Nix store, offline, from
 * host binaries (the nix-store package's fixtures: a static busybox, a `hello` script run by that
 * busybox, and redis-server with its libraries as separate, patchelf'd store paths), and writes
 * the inputs of `nix2container build` for two images:
 *
 *     <out>/hello/{config.json,closure.txt,copy-to-root.json}
 *     <out>/redis/{config.json,closure.txt,copy-to-root.json}
 *     <out>/gc-roots   the directory of GC roots that keeps all of it alive (remove it to release)
 *
 * Usage: node bench/dist/demo-closures.js <out> <redis port>
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createNixFixtures } from "@nix-snapshotter/nix-store/testing";

interface ImageInputs {
  config: Record<string, unknown>;
  closure: readonly string[];
  copyToRoot: readonly string[];
}

async function writeInputs(directory: string, inputs: ImageInputs): Promise<void> {
  await mkdir(directory, { recursive: true });
  await writeFile(join(directory, "config.json"), `${JSON.stringify(inputs.config)}\n`);
  await writeFile(join(directory, "closure.txt"), `${[...inputs.closure].sort().join("\n")}\n`);
  await writeFile(join(directory, "copy-to-root.json"), `${JSON.stringify(inputs.copyToRoot)}\n`);
}

async function main(): Promise<void> {
  const [out, portText] = process.argv.slice(2);
  const port = Number(portText);
  if (out === undefined || !Number.isInteger(port) || port <= 0 || port > 65_535) {
    throw new Error("usage: demo-closures <out directory> <redis port>");
  }
  const fixtures = await createNixFixtures({ label: "demo" });
  try {
    await mkdir(out, { recursive: true });
    await writeFile(join(out, "gc-roots"), `${fixtures.rootsDir}\n`);
    const busybox = await fixtures.busybox();
    console.log(`    busybox  ${busybox.storePath}`);
    const hello = await fixtures.script();
    console.log(`    hello    ${hello.storePath}`);
    const redis = await fixtures.redis();
    console.log(`    redis    ${redis.storePath} (+${redis.closure.length - 1} library paths)`);

    await writeInputs(join(out, "hello"), {
      config: { entrypoint: [hello.executable] },
      closure: hello.closure,
      copyToRoot: [],
    });
    // busybox in both images: its store path is shared by the two containers.
    await writeInputs(join(out, "redis"), {
      config: {
        entrypoint: [
          redis.executable,
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--save",
          "",
          "--appendonly",
          "no",
        ],
        env: ["PATH=/bin"],
      },
      closure: [...new Set([...redis.closure, ...busybox.closure])],
      copyToRoot: [busybox.storePath],
    });
  } catch (error) {
    await fixtures.cleanup();
    throw error;
  }
}

main().catch((error: unknown) => {
  console.error(`demo-closures: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
