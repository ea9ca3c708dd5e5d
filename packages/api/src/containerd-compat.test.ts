// Wire compatibility with the .proto files of Debian's packaged containerd source
// (golang-github-containerd-containerd-dev: containerd 1.6.20 on Debian 12, 1.7.24 on Debian 13;
// the release is read from the package's version/version.go). Everything that release defines
// and we define must be identical on the wire; fields and definitions added by later releases
// (up to 2.1) exist only in ours and are reported as extras.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { compareProtoShapes, parseProtoSources, shapesOf } from "./proto-compare.js";
import { readProtoTree } from "./proto-files.js";

const debianSource = "/usr/share/gocode/src/github.com/containerd/containerd";
const debianApi = join(debianSource, "api");
const ourProtoDirectory = fileURLToPath(new URL("../proto", import.meta.url));

/** `1.7` from version/version.go's `Version = "1.7.24+unknown"`, or undefined. */
function packagedRelease(): string | undefined {
  try {
    const text = readFileSync(join(debianSource, "version", "version.go"), "utf8");
    return /\bVersion\s*=\s*"v?(\d+\.\d+)\./.exec(text)?.[1];
  } catch {
    return undefined;
  }
}

/**
 * What each packaged release defines, in the proto packages we define, that we leave out by
 * design: image events and task metrics, and from 1.7 the sandbox types.
 */
const imageEventsAndMetrics = [
  "message containerd.services.images.v1.ImageCreate",
  "message containerd.services.images.v1.ImageDelete",
  "message containerd.services.images.v1.ImageUpdate",
  "message containerd.types.Metric",
];
const leftOutByRelease: Record<string, string[]> = {
  "1.6": imageEventsAndMetrics,
  "1.7": [
    ...imageEventsAndMetrics,
    "message containerd.types.Sandbox",
    "message containerd.types.Sandbox.Runtime",
  ],
};

const release = packagedRelease();

describe.skipIf(!existsSync(debianApi))(
  `containerd ${release ?? "(release unknown)"} wire compatibility (needs ${debianApi} from golang-github-containerd-containerd-dev)`,
  () => {
    const ourSources = readProtoTree(ourProtoDirectory);
    const upstream = shapesOf(parseProtoSources(readProtoTree(debianApi)));

    it("defines every message and service upstream has exactly as upstream", () => {
      const ours = shapesOf(parseProtoSources(ourSources));
      const result = compareProtoShapes(ours, upstream);
      console.info(`extras over containerd ${release}:\n  ${result.extras.join("\n  ")}`);
      expect(result.differences).toEqual([]);
      console.info(`left out of containerd ${release}:\n  ${result.missing.sort().join("\n  ")}`);
      expect(release, `the release of ${debianSource}/version/version.go`).toBeDefined();
      const leftOut = leftOutByRelease[release!];
      expect(leftOut, `what we leave out of containerd ${release}'s API is listed`).toBeDefined();
      expect(result.missing.sort()).toEqual(leftOut);
    });

    it("covers every method of the services we speak", () => {
      const ours = shapesOf(parseProtoSources(ourSources));
      for (const service of [
        "containerd.services.snapshots.v1.Snapshots",
        "containerd.services.content.v1.Content",
        "containerd.services.images.v1.Images",
        "containerd.services.leases.v1.Leases",
        "containerd.services.diff.v1.Diff",
        "containerd.services.namespaces.v1.Namespaces",
        "containerd.services.version.v1.Version",
      ]) {
        const theirs = upstream.get(service);
        const mine = ours.get(service);
        expect(theirs?.kind, service).toBe("service");
        expect(mine?.kind, service).toBe("service");
        if (theirs?.kind === "service" && mine?.kind === "service") {
          expect([...mine.methods.keys()].sort(), service).toEqual(
            [...theirs.methods.keys()].sort(),
          );
        }
      }
    });

    it("fails, naming the field, when a field number of ours is changed", () => {
      const root = parseProtoSources(ourSources);
      const field = root.lookupType("containerd.services.snapshots.v1.PrepareSnapshotRequest")
        .fields.key;
      expect(field).toBeInstanceOf(protobuf.Field);
      field!.id = 5;
      const result = compareProtoShapes(shapesOf(root), upstream);
      expect(result.differences).toEqual([
        "containerd.services.snapshots.v1.PrepareSnapshotRequest.key: number 5 in ours, 2 upstream",
      ]);
    });

    it("fails when a method of ours stops streaming or an enum value moves", () => {
      const root = parseProtoSources(ourSources);
      const list = root.lookupService("containerd.services.snapshots.v1.Snapshots").methods.List;
      list!.responseStream = false;
      const kind = root.lookupEnum("containerd.services.snapshots.v1.Kind");
      kind.values.COMMITTED = 4;
      const result = compareProtoShapes(shapesOf(root), upstream);
      expect(result.differences.sort()).toEqual([
        "containerd.services.snapshots.v1.Kind.COMMITTED: 4 in ours, 3 upstream",
        "containerd.services.snapshots.v1.Snapshots.List: responseStream false in ours, true upstream",
      ]);
    });
  },
);
