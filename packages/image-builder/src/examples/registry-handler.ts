import type { IncomingMessage, ServerResponse } from "node:http";
import { type BuildImageOptions, buildImage, ImageBuildError } from "../index.js";

export interface ImageSource {
  /** Build options for `<name>:<tag>`, or undefined when there is no such image. */
  resolve(name: string, tag: string): Promise<BuildImageOptions | undefined>;
}

type Blob = { mediaType: string; data: Uint8Array };

/** Serves nix images generated on demand: GET and HEAD of manifests (by tag) and blobs. */
export function createImageHandler(source: ImageSource) {
  const blobs = new Map<string, Blob>(); // by digest; a real registry would bound this cache
  const send = (response: ServerResponse, method: string, digest: string, blob: Blob) => {
    response.writeHead(200, {
      "content-type": blob.mediaType,
      "content-length": blob.data.byteLength,
      "docker-content-digest": digest,
    });
    response.end(method === "HEAD" ? undefined : blob.data);
  };
  const fail = (response: ServerResponse, status: number, code: string, message: string) => {
    response.writeHead(status, { "content-type": "application/json" });
    response.end(JSON.stringify({ errors: [{ code, message }] }));
  };
  return async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const method = request.method ?? "GET";
    const path = new URL(request.url ?? "/", "http://registry").pathname;
    const match = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (path === "/v2/") return void response.writeHead(200).end();
    if (match === null || (method !== "GET" && method !== "HEAD")) {
      return fail(response, 404, "NAME_UNKNOWN", `no route for ${method} ${path}`);
    }
    const [, name = "", kind, reference = ""] = match;
    const cached = blobs.get(reference);
    if (cached !== undefined) return send(response, method, reference, cached);
    if (kind === "blobs") return fail(response, 404, "BLOB_UNKNOWN", `blob ${reference} unknown`);
    try {
      const options = await source.resolve(name, reference);
      if (options === undefined)
        return fail(response, 404, "MANIFEST_UNKNOWN", `${name}:${reference} unknown`);
      const image = await buildImage(options);
      for (const [digest, data] of image.blobs)
        blobs.set(digest, { mediaType: "application/octet-stream", data });
      const manifest = {
        mediaType: image.manifestDescriptor.mediaType,
        data: image.blobs.get(image.manifestDescriptor.digest)!,
      };
      blobs.set(image.manifestDescriptor.digest, manifest);
      return send(response, method, image.manifestDescriptor.digest, manifest);
    } catch (error) {
      if (error instanceof ImageBuildError && error.code === "InvalidArgument") {
        return fail(response, 400, "MANIFEST_INVALID", error.message);
      }
      return fail(response, 500, "UNKNOWN", (error as Error).message);
    }
  };
}
