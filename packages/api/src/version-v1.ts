// containerd.services.version.v1: the Version service.
export * from "./gen/containerd/services/version/v1/version_pb.js";
