import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readTar, writeTar } from "./tar.js";

const execFileAsync = promisify(execFile);
const hasTar = existsSync("/bin/tar") || existsSync("/usr/bin/tar");

const storeName = `nix/store/${"a".repeat(32)}-${"n".repeat(150)}`;
const veryLong = `${"d".repeat(120)}/${"e".repeat(120)}/${"f".repeat(100)}`;
const longTarget = `/nix/store/${"b".repeat(32)}-${"l".repeat(150)}/bin/x`;

describe.skipIf(!hasTar)(
  `tar interoperability with GNU tar${hasTar ? "" : " (tar missing)"}`,
  () => {
    let directory: string;
    beforeAll(async () => {
      directory = await mkdtemp(join(tmpdir(), "oci-tar-"));
    });
    afterAll(async () => {
      await rm(directory, { recursive: true, force: true });
    });

    it("GNU tar extracts what writeTar writes, long names and link targets included", async () => {
      const archive = join(directory, "ours.tar");
      await writeFile(
        archive,
        writeTar([
          { name: storeName, type: "directory" },
          { name: veryLong, type: "file", data: Buffer.from("long"), mode: 0o555 },
          { name: "ünïcode", type: "file", data: Buffer.from("u") },
          { name: "link", type: "symlink", linkname: longTarget },
          { name: "hard", type: "hardlink", linkname: "ünïcode" },
        ]),
      );
      const { stdout } = await execFileAsync("tar", ["-tf", archive]);
      expect(stdout.trim().split("\n")).toEqual([
        `${storeName}/`,
        veryLong,
        "ünïcode",
        "link",
        "hard",
      ]);
      const out = join(directory, "extracted");
      await mkdir(out);
      await execFileAsync("tar", ["-xf", archive, "-C", out]);
      expect(await readFile(join(out, veryLong), "utf8")).toBe("long");
      expect(await readlink(join(out, "link"))).toBe(longTarget);
      expect(await readFile(join(out, "hard"), "utf8")).toBe("u");
    });

    it.each(["gnu", "pax", "ustar"])("readTar reads GNU tar's %s format", async (format) => {
      const source = join(directory, `source-${format}`);
      const name = format === "ustar" ? `${"d".repeat(90)}/${"f".repeat(90)}` : veryLong;
      await mkdir(join(source, name, ".."), { recursive: true });
      await writeFile(join(source, name), "content");
      await symlink(format === "ustar" ? "../target" : longTarget, join(source, "link"));
      const archive = join(directory, `${format}.tar`);
      await execFileAsync("tar", [
        `--format=${format}`,
        "--sort=name",
        "-C",
        source,
        "-cf",
        archive,
        ".",
      ]);
      const entries = readTar(await readFile(archive), { rejectEscapingLinks: false });
      const file = entries.find((entry) => entry.name === name);
      expect(file?.data.toString()).toBe("content");
      expect(entries.find((entry) => entry.name === "link")?.linkname).toBe(
        format === "ustar" ? "../target" : longTarget,
      );
      // The default reader refuses the link GNU tar stored: it leads out of the archive.
      const bytes = await readFile(archive);
      expect(() => readTar(bytes)).toThrow(/escapes the archive/);
      await rm(source, { recursive: true, force: true });
    });
  },
);
