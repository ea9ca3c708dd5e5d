// containerd.services.content.v1: the Content service (blobs) and its messages.
export * from "./gen/containerd/services/content/v1/content_pb.js";
