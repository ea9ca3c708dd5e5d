// Wire compatibility with the schemas compiled into the containerd program itself. Debian's
// containerd 1.6 binary carries, as gzip-compressed descriptors, every .proto it serves:
// containerd's own APIs, CRI runtime.v1 (the cri-api version it vendors) and grpc.health.v1.
// Our generated descriptors (what protobuf-es encodes with) must agree with them on every
// definition both have. This also covers CRI, for which no .proto file is packaged.
import { existsSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { clone } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { generatedFiles } from "./generated-files.js";
import { extractGzippedFileDescriptors } from "./go-binary-descriptors.js";
import { compareProtoShapes, shapesOfDescriptors } from "./proto-compare.js";

function findProgram(name: string): string | undefined {
  const directories = (process.env.PATH ?? "").split(delimiter).concat(["/usr/bin", "/usr/sbin"]);
  return directories.map((directory) => join(directory, name)).find((path) => existsSync(path));
}

const containerd = findProgram("containerd");
const partialServices = new Set(["runtime.v1.RuntimeService"]);

describe.skipIf(containerd === undefined)(
  "wire compatibility with the containerd binary (needs containerd on PATH)",
  () => {
    const descriptors = extractGzippedFileDescriptors(readFileSync(containerd ?? ""));
    const upstream = shapesOfDescriptors(descriptors);
    const ourFiles = generatedFiles().map((file) => file.proto);

    it("finds the schemas of the services we speak in the binary", () => {
      for (const service of [
        "containerd.services.snapshots.v1.Snapshots",
        "containerd.services.content.v1.Content",
        "containerd.services.images.v1.Images",
        "containerd.services.leases.v1.Leases",
        "containerd.services.diff.v1.Diff",
        "containerd.services.namespaces.v1.Namespaces",
        "containerd.services.version.v1.Version",
        "runtime.v1.ImageService",
        "runtime.v1.RuntimeService",
        "grpc.health.v1.Health",
      ]) {
        expect(upstream.get(service)?.kind, service).toBe("service");
      }
    });

    it("agrees on every message, enum and method both define", () => {
      const result = compareProtoShapes(shapesOfDescriptors(ourFiles), upstream, {
        partialServices,
      });
      console.info(
        `extras over ${containerd}: ${result.extras.length}; left out: ${result.missing.length}`,
      );
      expect(result.differences).toEqual([]);
      // Every CRI ImageService method of that version is ours; of RuntimeService, the pod
      // lifecycle subset.
      const ours = shapesOfDescriptors(ourFiles);
      const imageService = upstream.get("runtime.v1.ImageService");
      expect(imageService?.kind).toBe("service");
      if (imageService?.kind === "service") {
        for (const method of imageService.methods.keys()) {
          expect(result.missing).not.toContain(`method runtime.v1.ImageService.${method}`);
        }
      }
      // Outside CRI, we leave out only image events and task metrics.
      expect(result.missing.filter((entry) => !/ runtime\.v1\./.test(entry)).sort()).toEqual([
        "message containerd.services.images.v1.ImageCreate",
        "message containerd.services.images.v1.ImageDelete",
        "message containerd.services.images.v1.ImageUpdate",
        "message containerd.types.Metric",
      ]);
      // Every message a defined CRI method uses is defined too.
      for (const entry of result.missing) {
        const name = entry.replace(/^\w+ /, "");
        expect(ours.has(name), name).toBe(false);
      }
    });

    it("names the field when one of our generated field numbers is changed", () => {
      const mutated = ourFiles.map((file) => clone(FileDescriptorProtoSchema, file));
      const cri = mutated.find((file) => file.package === "runtime.v1");
      const pull = cri?.messageType.find((message) => message.name === "PullImageRequest");
      const auth = pull?.field.find((field) => field.name === "auth");
      expect(auth?.number).toBe(2);
      if (auth !== undefined) {
        auth.number = 4;
      }
      const result = compareProtoShapes(shapesOfDescriptors(mutated), upstream, {
        partialServices,
      });
      expect(result.differences).toEqual([
        "runtime.v1.PullImageRequest.auth: number 4 in ours, 2 upstream",
      ]);
    });
  },
);
