// Wire compatibility with the .proto files of Debian's packaged containerd source
// (golang-github-containerd-containerd-dev, containerd 1.6.20). Everything that 1.6 defines and
// we define must be identical on the wire; fields and definitions added by containerd 1.7 to 2.1
// exist only in ours and are reported as extras.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { compareProtoShapes, parseProtoSources, shapesOf } from "./proto-compare.js";
import { readProtoTree } from "./proto-files.js";

const debianApi = "/usr/share/gocode/src/github.com/containerd/containerd/api";
const ourProtoDirectory = fileURLToPath(new URL("../proto", import.meta.url));

describe.skipIf(!existsSync(debianApi))(
  `containerd wire compatibility (needs ${debianApi} from golang-github-containerd-containerd-dev)`,
  () => {
    const ourSources = readProtoTree(ourProtoDirectory);
    const upstream = shapesOf(parseProtoSources(readProtoTree(debianApi)));

    it("defines every message and service upstream has exactly as upstream", () => {
      const ours = shapesOf(parseProtoSources(ourSources));
      const result = compareProtoShapes(ours, upstream);
      console.info(`extras over containerd 1.6:\n  ${result.extras.join("\n  ")}`);
      expect(result.differences).toEqual([]);
      // What we leave out of the packages we define: image events and task metrics.
      expect(result.missing.sort()).toEqual([
        "message containerd.services.images.v1.ImageCreate",
        "message containerd.services.images.v1.ImageDelete",
        "message containerd.services.images.v1.ImageUpdate",
        "message containerd.types.Metric",
      ]);
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
