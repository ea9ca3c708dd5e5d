import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A fake Nix store in a temporary directory (`build` takes `--store-dir`), so tests of the CLI
 * need no Nix: a `hello` package (`bin/hello`, link `bin/hi`), an image config file and a
 * closure-info directory listing both, and a copy-to-root list naming `hello`.
 */
export interface FakeStore {
  root: string;
  storeDir: string;
  /** An empty directory for the test's own files (it holds `copy-to-root.json`). */
  work: string;
  hello: string;
  configFile: string;
  closureInfo: string;
  copyToRootFile: string;
  /** `build` arguments for this store (linux/amd64), then `extra`, then the output path. */
  buildArgs(out: string, ...extra: string[]): string[];
  cleanup(): Promise<void>;
}

const hash = (letter: string) => letter.repeat(32);

export async function createFakeStore(prefix: string): Promise<FakeStore> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  const storeDir = join(root, "store");
  const work = join(root, "work");
  const hello = join(storeDir, `${hash("a")}-hello`);
  const configFile = join(storeDir, `${hash("b")}-config-hello.json`);
  const closureInfo = join(storeDir, `${hash("c")}-closure-info`);
  const copyToRootFile = join(work, "copy-to-root.json");
  await mkdir(join(hello, "bin"), { recursive: true });
  await writeFile(join(hello, "bin", "hello"), "#!/bin/sh\necho hello\n");
  await symlink("hello", join(hello, "bin", "hi"));
  await writeFile(configFile, JSON.stringify({ entrypoint: ["/bin/hello"], ENV: ["A=1"] }));
  await mkdir(closureInfo);
  await writeFile(join(closureInfo, "store-paths"), `${configFile}\n${hello}\n`);
  await mkdir(work);
  await writeFile(copyToRootFile, JSON.stringify([hello]));
  return {
    root,
    storeDir,
    work,
    hello,
    configFile,
    closureInfo,
    copyToRootFile,
    buildArgs: (out, ...extra) => [
      "build",
      "--store-dir",
      storeDir,
      "--config",
      configFile,
      "--closure",
      join(closureInfo, "store-paths"),
      "--copy-to-root",
      copyToRootFile,
      "--arch",
      "amd64",
      "--os",
      "linux",
      ...extra,
      out,
    ],
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}
